//! PostgreSQL, as the tests use it: a throwaway cluster of their own (see
//! `tests/support/postgres.rs`), reached over a Unix socket with tokio-postgres.
//!
//! Without PostgreSQL on the machine these tests print how to enable them and pass, unless
//! `DURABLE_REQUIRE_POSTGRES` is set (as `.ci/run` does): then they fail.

use durable_testkit::postgres::Server;

/// The server for this test, or `None` (with a notice) when PostgreSQL is not available
/// and not required.
fn server_or_skip(test: &str) -> Option<Server> {
    match Server::start() {
        Ok(server) => Some(server),
        Err(why) if std::env::var_os("DURABLE_REQUIRE_POSTGRES").is_some() => {
            panic!("{test}: PostgreSQL is required here but unavailable: {why}")
        }
        Err(why) => {
            eprintln!("{test}: skipped, PostgreSQL is unavailable: {why}");
            None
        }
    }
}

#[tokio::test]
async fn a_throwaway_cluster_takes_connections_and_keeps_what_it_is_given() {
    let Some(server) = server_or_skip("a_throwaway_cluster_takes_connections") else {
        return;
    };
    let url = server.database("harness").unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE kept (id bigint PRIMARY KEY, note text NOT NULL)")
        .await
        .unwrap();
    for id in 0..10i64 {
        client
            .execute(
                "INSERT INTO kept (id, note) VALUES ($1, $2)",
                &[&id, &format!("note {id}")],
            )
            .await
            .unwrap();
    }
    let row = client
        .query_one("SELECT count(*), sum(id)::bigint FROM kept", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 10);
    assert_eq!(row.get::<_, i64>(1), 45);
    // Durability is on: the cluster runs with fsync, as the durability tests need.
    let fsync: String = client.query_one("SHOW fsync", &[]).await.unwrap().get(0);
    assert_eq!(fsync, "on");
    drop(client);
    connection.await.unwrap().unwrap();
    // A second database on the same server is empty and separate.
    let other = server.database("harness").unwrap();
    assert_ne!(other, url);
    let (client, connection) = tokio_postgres::connect(&other, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'kept'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
}
