//! PostgreSQL, as the tests use it: a throwaway cluster of their own (see
//! `tests/support/postgres.rs`), reached over a Unix socket with tokio-postgres.
//!
//! Without PostgreSQL on the machine these tests print how to enable them and pass, unless
//! `DURABLE_REQUIRE_POSTGRES` is set (as `.ci/run` does): then they fail.

use durable_testkit::postgres::server_or_skip;

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

/// A fresh schema on one database per conformance check: `PostgresStore` is the same
/// `KvStore` as the embedded stores, held to the same suite.
#[test]
fn the_postgres_store_passes_the_store_conformance_suite() {
    use durable_store::{PostgresStore, Store, conformance};
    use std::sync::Arc;
    let Some(server) = server_or_skip("the_postgres_store_passes_the_store_conformance_suite")
    else {
        return;
    };
    let url = server.database("conformance").unwrap();
    let mut next = 0;
    conformance::run_all(&mut || {
        next += 1;
        Arc::new(PostgresStore::connect(&url, &format!("check_{next}")).unwrap()) as Arc<dyn Store>
    });
    let schema = "persistence";
    conformance::run_persistence(&mut || {
        Arc::new(PostgresStore::connect(&url, schema).unwrap()) as Arc<dyn Store>
    });
}

/// Rows stored before the schema had the partition column (or with it lost) get their
/// partition when a store opens the schema, so a partition's scans still find them.
#[test]
fn rows_stored_without_a_partition_get_theirs_when_the_schema_is_opened() {
    use durable_store::{
        ActivityWorkItem, ExecutionId, InstanceId, Json, PostgresStore, Store, TaskId, WriteBatch,
        partition_of,
    };
    let Some(server) = server_or_skip("rows_stored_without_a_partition_get_theirs") else {
        return;
    };
    let url = server.database("backfill").unwrap();
    let ids: Vec<InstanceId> = (0..40)
        .map(|n| InstanceId::new(format!("old-{n}")).unwrap())
        .collect();
    {
        let store = PostgresStore::connect(&url, "hub").unwrap();
        let mut batch = WriteBatch::new();
        for id in &ids {
            batch.put_activity(ActivityWorkItem {
                instance: id.clone(),
                execution: ExecutionId::FIRST,
                task: TaskId(1),
                name: "work".to_owned(),
                input: Json::null(),
                restarts: 0,
                isolated: false,
                retry: None,
            });
        }
        store.commit(&batch).unwrap();
    }
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let cleared = client
            .execute("UPDATE hub.kv SET part = NULL WHERE part IS NOT NULL", &[])
            .await
            .unwrap();
        assert_eq!(cleared, 40);
    });
    let store = PostgresStore::connect(&url, "hub").unwrap();
    let partition = partition_of(ids[0].as_str());
    let found = store.scan_activities_in(partition, None, 100).unwrap();
    let expected = ids
        .iter()
        .filter(|id| partition_of(id.as_str()) == partition)
        .count();
    assert_eq!(found.len(), expected);
    assert!(
        found
            .iter()
            .all(|item| partition_of(item.instance.as_str()) == partition)
    );
}

#[test]
fn an_unreachable_database_and_a_bad_schema_are_clear_errors() {
    use durable_store::{Error, PostgresStore};
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!(
        "host={} port=1 user=postgres dbname=none",
        dir.path().display()
    );
    let error = PostgresStore::connect(&nowhere, "hub").err().unwrap();
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    assert!(
        error.to_string().contains("check that the server runs"),
        "{error}"
    );

    let Some(server) = server_or_skip("an_unreachable_database_and_a_bad_schema") else {
        return;
    };
    let url = server.database("errors").unwrap();
    for bad in [
        "",
        "Hub",
        "1hub",
        "hub\"; DROP TABLE x; --",
        &"h".repeat(64),
    ] {
        let error = PostgresStore::connect(&url, bad).err().unwrap();
        assert!(matches!(error, Error::InvalidSchema(_)), "{bad}: {error:?}");
    }
}

#[test]
fn a_second_store_on_one_schema_is_refused_until_the_first_is_gone() {
    use durable_store::{Error, PostgresStore};
    let Some(server) = server_or_skip("a_second_store_on_one_schema_is_refused") else {
        return;
    };
    let url = server.database("lock").unwrap();
    let first = PostgresStore::connect(&url, "hub").unwrap();
    let error = PostgresStore::connect(&url, "hub").err().unwrap();
    assert!(
        matches!(&error, Error::SchemaInUse(schema) if schema == "hub"),
        "{error:?}"
    );
    // Another schema of the same database is another task hub.
    let _other = PostgresStore::connect(&url, "other_hub").unwrap();
    drop(first);
    // Dropping the store gives the schema back at once.
    PostgresStore::connect(&url, "hub").unwrap();
}

mod runtime_on_postgres {
    use super::server_or_skip;
    use durable::prelude::*;
    use serde::{Deserialize, Serialize};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(30);

    #[activity]
    async fn double(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
        Ok(x * 2)
    }

    #[orchestrator]
    async fn chain(ctx: OrchestrationContext, x: u64) -> Result<u64, Error> {
        let a = ctx.call_activity(double, x).await?;
        let b = ctx.call_activity(double, a).await?;
        ctx.call_activity(double, b).await
    }

    #[orchestrator]
    async fn fan_out(ctx: OrchestrationContext, n: u64) -> Result<u64, Error> {
        let tasks = (0..n).map(|i| ctx.call_activity(double, i));
        Ok(ctx.join_all(tasks).await?.into_iter().sum())
    }

    const APPROVAL: ExternalEvent<u64> = ExternalEvent::new("approval");

    #[orchestrator]
    async fn approve(ctx: OrchestrationContext, base: u64) -> Result<u64, Error> {
        let extra = ctx.wait_for_event(APPROVAL).await?;
        Ok(base + extra)
    }

    #[derive(Default, Serialize, Deserialize)]
    struct Tally {
        total: i64,
    }

    #[entity]
    impl Tally {
        fn add(&mut self, amount: i64) {
            self.total += amount;
        }
        fn get(&self) -> i64 {
            self.total
        }
    }

    async fn runtime(url: &str) -> Runtime {
        Runtime::builder()
            .postgres_schema(url, "orders")
            .register(double)
            .register(chain)
            .register(fan_out)
            .register(approve)
            .register_entity::<Tally>()
            .start()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn orchestrations_activities_events_and_entities_run_and_survive_a_restart() {
        let Some(server) = server_or_skip("runtime_on_postgres") else {
            return;
        };
        let url = server.database("runtime").unwrap();
        let first = runtime(&url).await;
        let client = first.client();
        let mut chains = Vec::new();
        for x in 0..20 {
            chains.push(
                client
                    .start_with_id(chain, format!("chain-{x}"), x)
                    .await
                    .unwrap(),
            );
        }
        let wide = client.start_with_id(fan_out, "wide", 100).await.unwrap();
        for _ in 0..50 {
            client.entity::<Tally>("t").signal().add(2).await.unwrap();
        }
        client.start_with_id(approve, "waiting", 7).await.unwrap();
        for (x, handle) in (0..).zip(chains) {
            assert_eq!(handle.wait(WAIT).await.unwrap(), x * 8);
        }
        assert_eq!(
            wide.wait(WAIT).await.unwrap(),
            (0..100).map(|i| i * 2).sum::<u64>()
        );
        durable_testkit::eventually_eq("the tally's 50 signals", Some(100), async || {
            client
                .entity::<Tally>("t")
                .state()
                .await
                .unwrap()
                .map(|t| t.total)
        })
        .await;
        first.shutdown().await;

        // Everything acknowledged is in PostgreSQL: a new runtime on the schema goes on.
        let second = runtime(&url).await;
        let client = second.client();
        let status = client.status("chain-3").await.unwrap().unwrap();
        assert_eq!(status.runtime_status, RuntimeStatus::Completed);
        client.raise_event("waiting", APPROVAL, 5).await.unwrap();
        let status = client.wait_for_completion("waiting", WAIT).await.unwrap();
        assert_eq!(status.output, Some(durable::Json::encode(&12u64).unwrap()));
        let total = client
            .entity::<Tally>("t")
            .state()
            .await
            .unwrap()
            .unwrap()
            .total;
        assert_eq!(total, 100, "each signal applied once");
        let page = client
            .list(&durable::InstanceQuery::default(), 100, None)
            .await
            .unwrap();
        assert_eq!(
            page.instances.len(),
            22,
            "20 chains, the fan-out and the approval"
        );
        second.shutdown().await;
    }
}

/// Partition leases: one owner per partition, epochs that fence a former owner's writes.
mod leases {
    use super::server_or_skip;
    use durable_store::codec::Space;
    use durable_store::{Error, KvEngine, KvOp, Lease, PARTITIONS, PostgresEngine};
    use std::time::Duration;

    const LONG: Duration = Duration::from_secs(60);

    fn put(key: &str) -> KvOp {
        KvOp::Put(Space::Meta, key.as_bytes().to_vec(), b"v".to_vec())
    }

    #[test]
    fn a_former_owners_fenced_write_applies_nothing() {
        let Some(server) = server_or_skip("a_former_owners_fenced_write_applies_nothing") else {
            return;
        };
        let url = server.database("fence").unwrap();
        let a = PostgresEngine::connect_shared(&url, "hub").unwrap();
        let b = PostgresEngine::connect_shared(&url, "hub").unwrap();
        // A holds partition 3 briefly; its write goes through.
        let short = Duration::from_millis(200);
        let a_lease = a.acquire("a", 3, short).unwrap().expect("a free partition");
        assert_eq!(a_lease.epoch, 1);
        a.write_fenced("a", &[a_lease], vec![put("by-a-1")])
            .unwrap();
        // A stalls past its lease; B takes the partition over (database time decides).
        let mut b_lease = None;
        assert!(durable_testkit::wait_until(
            durable_testkit::PATIENCE,
            || {
                b_lease = b.acquire("b", 3, LONG).unwrap();
                b_lease.is_some()
            }
        ));
        let b_lease = b_lease.unwrap();
        assert_eq!(b_lease.epoch, 2);
        // A wakes up and writes: fenced, and nothing of it lands.
        let error = a
            .write_fenced("a", &[a_lease], vec![put("by-a-2"), put("by-a-3")])
            .unwrap_err();
        assert!(
            matches!(&error, Error::Fenced { partitions } if partitions == &[3]),
            "{error:?}"
        );
        assert_eq!(
            b.get(Space::Meta, b"by-a-1").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(b.get(Space::Meta, b"by-a-2").unwrap(), None);
        assert_eq!(b.get(Space::Meta, b"by-a-3").unwrap(), None);
        // A write fenced on several partitions applies nothing if any one is lost.
        let a_other = a.acquire("a", 4, LONG).unwrap().unwrap();
        let error = a
            .write_fenced("a", &[a_other, a_lease], vec![put("by-a-4")])
            .unwrap_err();
        assert!(
            matches!(&error, Error::Fenced { partitions } if partitions == &[3]),
            "{error:?}"
        );
        assert_eq!(b.get(Space::Meta, b"by-a-4").unwrap(), None);
        // Its renewal says what it lost; the new owner writes.
        assert_eq!(
            a.renew("a", &[a_other, a_lease], LONG).unwrap(),
            vec![a_other]
        );
        b.write_fenced("b", &[b_lease], vec![put("by-b")]).unwrap();
        assert!(b.get(Space::Meta, b"by-b").unwrap().is_some());
    }

    /// A commit whose answer was lost with its connection is looked up by its token: what
    /// landed says so, what did not (refused while the database was away, fenced, never
    /// sent) says not, and its data is absent.
    #[test]
    fn a_commit_whose_outcome_is_unknown_is_found_out_by_its_token() {
        let Some(server) = server_or_skip("a_commit_whose_outcome_is_unknown") else {
            return;
        };
        let url = server.database("outcome").unwrap();
        let a = PostgresEngine::connect_shared(&url, "hub").unwrap();
        let lease = a.acquire("a", 5, LONG).unwrap().unwrap();
        let commit = |token: i64, key: &str| durable_store::Commit {
            worker: "a",
            fence: std::slice::from_ref(&lease),
            ops: vec![put(key)],
            send: &[],
            consume: &[],
            replies: &[],
            token,
        };
        a.commit_fenced(commit(77, "landed")).unwrap();
        assert!(a.committed(5, 77).unwrap(), "a commit that landed");
        assert!(!a.committed(5, 78).unwrap(), "a token never committed");
        // The database goes away: the commit is refused, and once it is back the token
        // says it did not land.
        server.stop().unwrap();
        let error = a.commit_fenced(commit(79, "refused")).unwrap_err();
        assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
        server.restart().unwrap();
        assert!(!a.committed(5, 79).unwrap());
        assert_eq!(a.get(Space::Meta, b"refused").unwrap(), None);
        assert!(a.get(Space::Meta, b"landed").unwrap().is_some());
        // A fenced commit did not land either.
        let other = PostgresEngine::connect_shared(&url, "hub").unwrap();
        a.release("a", lease).unwrap();
        let taken = other.acquire("b", 5, LONG).unwrap().unwrap();
        assert!(a.commit_fenced(commit(80, "fenced")).is_err());
        assert!(!a.committed(5, 80).unwrap());
        other
            .write_fenced("b", &[taken], vec![put("by-b")])
            .unwrap();
        assert_eq!(a.get(Space::Meta, b"fenced").unwrap(), None);
    }

    #[test]
    fn a_lease_is_held_until_it_expires_or_is_given_back() {
        let Some(server) = server_or_skip("a_lease_is_held_until_it_expires_or_is_given_back")
        else {
            return;
        };
        let url = server.database("lease").unwrap();
        let a = PostgresEngine::connect_shared(&url, "hub").unwrap();
        let b = PostgresEngine::connect_shared(&url, "hub").unwrap();
        let lease = a.acquire("a", 7, LONG).unwrap().unwrap();
        assert_eq!(b.acquire("b", 7, LONG).unwrap(), None, "held by a");
        assert_eq!(
            a.acquire("a", 7, LONG).unwrap(),
            None,
            "not twice, even by its owner"
        );
        // A graceful hand-over: free at once.
        a.release("a", lease).unwrap();
        let taken = b.acquire("b", 7, LONG).unwrap().expect("released");
        assert_eq!(
            taken,
            Lease {
                partition: 7,
                epoch: 2
            }
        );
        // Releasing a lease one no longer holds changes nothing.
        a.release("a", lease).unwrap();
        assert_eq!(a.acquire("a", 7, LONG).unwrap(), None);
        assert!(
            a.acquire("a", PARTITIONS, LONG).is_err(),
            "no such partition"
        );
    }

    #[test]
    fn workers_racing_for_every_partition_get_one_owner_each() {
        let Some(server) = server_or_skip("workers_racing_for_every_partition") else {
            return;
        };
        let url = server.database("race").unwrap();
        let won: Vec<Vec<Lease>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|w| {
                    let url = url.clone();
                    scope.spawn(move || {
                        let engine = PostgresEngine::connect_shared(&url, "hub").unwrap();
                        let me = format!("w{w}");
                        (0..PARTITIONS)
                            .filter_map(|p| engine.acquire(&me, p, LONG).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut owned: Vec<u16> = won.iter().flatten().map(|lease| lease.partition).collect();
        owned.sort_unstable();
        assert_eq!(
            owned,
            (0..PARTITIONS).collect::<Vec<_>>(),
            "each exactly once"
        );
        assert!(won.iter().flatten().all(|lease| lease.epoch == 1));
    }
}

/// Messages between partitions: sent with the sender's commit, polled by the owner of the
/// target's partition, consumed with the receiver's.
mod messages {
    use super::server_or_skip;
    use durable_store::{Horizon, Outgoing, PARTITIONS, PostgresEngine, partition_of};
    use std::time::Duration;

    const LONG: Duration = Duration::from_secs(60);

    fn message(partition: u16, body: &str) -> Outgoing {
        Outgoing {
            partition,
            target: format!("child-{body}"),
            body: body.as_bytes().to_vec(),
        }
    }

    fn bodies(polled: &[durable_store::Polled]) -> Vec<String> {
        polled
            .iter()
            .map(|message| String::from_utf8(message.body.clone()).unwrap())
            .collect()
    }

    #[test]
    fn a_poll_never_skips_a_message_that_an_older_transaction_commits_late() {
        let Some(server) = server_or_skip("a_poll_never_skips_a_message") else {
            return;
        };
        let url = server.database("poll").unwrap();
        let engine = PostgresEngine::connect_shared(&url, "hub").unwrap();
        let p = 5;
        // An older transaction writes a message and stays open...
        let tokio = tokio::runtime::Runtime::new().unwrap();
        let slow = tokio.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client
                .batch_execute(&format!(
                    "BEGIN; INSERT INTO hub.messages (partition, target, body)
                     VALUES ({p}, 'late', 'late'::bytea)"
                ))
                .await
                .unwrap();
            client
        });
        // ...while a younger one sends and commits.
        let lease = engine.acquire("w", 9, LONG).unwrap().unwrap();
        engine
            .write_fenced_with_messages("w", &[lease], Vec::new(), &[message(p, "early")], &[])
            .unwrap();
        let mut horizon = Horizon::default();
        let first = engine.poll_messages(&[p], &mut horizon, 100).unwrap();
        assert_eq!(bodies(&first), ["early"]);
        // The older transaction commits now: the next poll still finds its message, and
        // does not deliver the younger one twice.
        tokio.block_on(async { slow.batch_execute("COMMIT").await.unwrap() });
        let second = engine.poll_messages(&[p], &mut horizon, 100).unwrap();
        assert_eq!(bodies(&second), ["late"]);
        assert!(
            engine
                .poll_messages(&[p], &mut horizon, 100)
                .unwrap()
                .is_empty()
        );
        // Consumed with a turn's commit, a message is gone for a fresh poller too; the
        // unconsumed one is found again.
        let owner = engine.acquire("w", p, LONG).unwrap().unwrap();
        let early = &first[0];
        engine
            .write_fenced_with_messages("w", &[owner], Vec::new(), &[], &[(p, early.seq)])
            .unwrap();
        let fresh = engine
            .poll_messages(&[p], &mut Horizon::default(), 100)
            .unwrap();
        assert_eq!(bodies(&fresh), ["late"]);
    }

    #[test]
    fn a_fenced_writes_messages_are_not_sent_and_its_consumed_ones_stay() {
        let Some(server) = server_or_skip("a_fenced_writes_messages") else {
            return;
        };
        let url = server.database("fenced_messages").unwrap();
        let a = PostgresEngine::connect_shared(&url, "hub").unwrap();
        let b = PostgresEngine::connect_shared(&url, "hub").unwrap();
        let a_lease = a.acquire("a", 1, LONG).unwrap().unwrap();
        a.write_fenced_with_messages("a", &[a_lease], Vec::new(), &[message(2, "kept")], &[])
            .unwrap();
        let kept = a.poll_messages(&[2], &mut Horizon::default(), 10).unwrap();
        a.release("a", a_lease).unwrap();
        let _b_lease = b.acquire("b", 1, LONG).unwrap().unwrap();
        let fenced = a.write_fenced_with_messages(
            "a",
            &[a_lease],
            Vec::new(),
            &[message(2, "lost")],
            &[(2, kept[0].seq)],
        );
        assert!(fenced.is_err());
        let after = b.poll_messages(&[2], &mut Horizon::default(), 10).unwrap();
        assert_eq!(bodies(&after), ["kept"], "nothing sent, nothing consumed");
    }

    #[test]
    fn partitions_of_ids_are_stable_and_spread() {
        // Part of the stored format: these values must never change.
        assert_eq!(partition_of(""), (0xcbf2_9ce4_8422_2325u64 % 64) as u16);
        let mut counts = vec![0u32; usize::from(PARTITIONS)];
        for i in 0..6400 {
            counts[usize::from(partition_of(&format!("order-{i}")))] += 1;
        }
        assert!(
            counts.iter().all(|&n| (50..=150).contains(&n)),
            "{counts:?}"
        );
    }
}

#[test]
fn a_database_that_goes_away_is_an_error_until_it_is_back_then_work_goes_on() {
    use durable_store::codec::Space;
    use durable_store::{Error, KvEngine, KvOp, PostgresEngine};
    if std::env::var_os(durable_testkit::postgres::SERVER_VAR).is_some() {
        return; // needs a cluster of its own to stop
    }
    let Some(server) = server_or_skip("a_database_that_goes_away") else {
        return;
    };
    let url = server.database("restart").unwrap();
    let engine = PostgresEngine::connect(&url, "hub").unwrap();
    let put = |key: &str| {
        vec![KvOp::Put(
            Space::Meta,
            key.as_bytes().to_vec(),
            b"v".to_vec(),
        )]
    };
    engine.write(put("before")).unwrap();

    server.stop().unwrap();
    let error = engine.write(put("while-down")).unwrap_err();
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    assert!(
        error.to_string().contains("check that the server runs"),
        "{error}"
    );
    assert!(matches!(
        engine.get(Space::Meta, b"before"),
        Err(Error::Unavailable(_))
    ));

    server.restart().unwrap();
    // The engine connects again (and holds its schema again): nothing acknowledged is lost,
    // nothing refused was applied.
    engine.write(put("after")).unwrap();
    assert!(engine.get(Space::Meta, b"before").unwrap().is_some());
    assert!(engine.get(Space::Meta, b"after").unwrap().is_some());
    assert_eq!(engine.get(Space::Meta, b"while-down").unwrap(), None);
    let second = PostgresEngine::connect(&url, "hub").err().unwrap();
    assert!(matches!(second, Error::SchemaInUse(_)), "{second:?}");
}
