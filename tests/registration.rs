//! Registering functions: a name means one function of its kind. Two functions under one
//! name (same-named functions of two modules, or a `name = "..."` that clashes) are refused
//! at start, naming both; registering the same function twice is harmless; replacing one on
//! purpose (a test double) is said with `replace`.

use durable::prelude::*;
use durable::registry::Kind;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

mod email {
    use durable::prelude::*;

    #[activity]
    pub async fn send(_ctx: ActivityContext, to: String) -> Result<String, Error> {
        Ok(format!("email to {to}"))
    }
}

mod sms {
    use durable::prelude::*;

    #[activity]
    pub async fn send(_ctx: ActivityContext, to: String) -> Result<String, Error> {
        Ok(format!("sms to {to}"))
    }

    /// Not called `send`, but registered under that name.
    #[activity(name = "send")]
    pub async fn text(_ctx: ActivityContext, to: String) -> Result<String, Error> {
        Ok(format!("text to {to}"))
    }
}

/// Calls both `send`s: with two functions of one name it would get one answer twice.
#[orchestrator]
async fn notify(ctx: OrchestrationContext, to: String) -> Result<Vec<String>, Error> {
    let by_email = ctx.call_activity(email::send, to.clone()).await?;
    let by_sms = ctx.call_activity(sms::send, to).await?;
    Ok(vec![by_email, by_sms])
}

mod billing {
    use durable::prelude::*;

    #[orchestrator]
    pub async fn checkout(_ctx: OrchestrationContext, cart: u64) -> Result<u64, Error> {
        Ok(cart)
    }
}

mod shipping {
    use durable::prelude::*;

    #[orchestrator(name = "checkout")]
    pub async fn ship(_ctx: OrchestrationContext, cart: u64) -> Result<u64, Error> {
        Ok(cart + 1)
    }
}

mod shop {
    use serde::{Deserialize, Serialize};

    #[derive(Default, Serialize, Deserialize)]
    pub struct Counter {
        pub value: i64,
    }

    #[durable::entity]
    impl Counter {
        fn add(&mut self, amount: i64) {
            self.value += amount;
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Tally {
    value: i64,
}

#[entity(name = "Counter")]
impl Tally {
    fn add(&mut self, amount: i64) {
        self.value += 10 * amount;
    }
}

/// The error `start` gives, as text (a runtime that started is shut down and fails the
/// test).
async fn start_error(builder: durable::RuntimeBuilder) -> durable::runtime::Error {
    match builder.in_memory().start().await {
        Ok(runtime) => {
            runtime.shutdown().await;
            panic!("the runtime started with two functions under one name")
        }
        Err(error) => error,
    }
}

#[tokio::test]
async fn same_named_activities_of_two_modules_are_refused_naming_both() {
    let builder = Runtime::builder()
        .register(notify)
        .register(email::send)
        .register(sms::send);
    let error = start_error(builder).await;
    let text = error.to_string();
    assert!(text.contains("activity `send`"), "{text}");
    assert!(text.contains("`registration::email::send`"), "{text}");
    assert!(text.contains("`registration::sms::send`"), "{text}");
    assert!(text.contains("#[activity(name = "), "{text}");
    assert!(text.contains(".replace("), "{text}");
}

#[tokio::test]
async fn a_clashing_name_option_is_refused() {
    let builder = Runtime::builder().register(email::send).register(sms::text);
    let text = start_error(builder).await.to_string();
    assert!(text.contains("`registration::email::send`"), "{text}");
    assert!(text.contains("`registration::sms::text`"), "{text}");
}

#[tokio::test]
async fn same_named_orchestrators_are_refused() {
    let builder = Runtime::builder()
        .register(billing::checkout)
        .register(shipping::ship);
    let text = start_error(builder).await.to_string();
    assert!(text.contains("orchestrator `checkout`"), "{text}");
    assert!(text.contains("`registration::billing::checkout`"), "{text}");
    assert!(text.contains("`registration::shipping::ship`"), "{text}");
}

#[tokio::test]
async fn same_named_entities_are_refused() {
    let builder = Runtime::builder()
        .register_entity::<shop::Counter>()
        .register_entity::<Tally>();
    let text = start_error(builder).await.to_string();
    assert!(text.contains("entity type `counter`"), "{text}");
    assert!(text.contains("`registration::shop::Counter`"), "{text}");
    assert!(text.contains("`registration::Tally`"), "{text}");
    assert!(text.contains("#[entity(name = "), "{text}");
}

#[tokio::test]
async fn registering_the_same_function_twice_is_harmless() {
    let runtime = Runtime::builder()
        .in_memory()
        .register(billing::checkout)
        .register(billing::checkout)
        .register(email::send)
        .register(email::send)
        .register_entity::<shop::Counter>()
        .register_entity::<shop::Counter>()
        .start()
        .await
        .unwrap();
    let out = runtime.client().start(billing::checkout, 4).await.unwrap();
    assert_eq!(out.wait(WAIT).await.unwrap(), 4);
    runtime.shutdown().await;
}

#[tokio::test]
async fn the_error_names_each_clash_by_kind_name_and_paths() {
    let builder = Runtime::builder()
        .register(email::send)
        .register(sms::send)
        .register(sms::text)
        .register(billing::checkout)
        .register(shipping::ship);
    let error = start_error(builder).await;
    let durable::runtime::Error::DuplicateNames(duplicates) = &error else {
        panic!("not DuplicateNames: {error:?}");
    };
    let found: Vec<_> = duplicates
        .iter()
        .map(|duplicate| (duplicate.kind, duplicate.name, duplicate.rust_paths.clone()))
        .collect();
    assert_eq!(
        found,
        [
            (
                Kind::Orchestrator,
                "checkout",
                vec![
                    "registration::billing::checkout",
                    "registration::shipping::ship"
                ]
            ),
            (
                Kind::Activity,
                "send",
                vec![
                    "registration::email::send",
                    "registration::sms::send",
                    "registration::sms::text"
                ]
            ),
        ]
    );
}

#[tokio::test]
async fn replace_swaps_a_function_in_whether_before_or_after_the_real_one() {
    for replace_first in [false, true] {
        let builder = Runtime::builder().in_memory().register(notify);
        let builder = if replace_first {
            builder
                .replace(sms::text)
                .register(email::send)
                .register(sms::send)
        } else {
            builder
                .register(email::send)
                .register(sms::send)
                .replace(sms::text)
        };
        let runtime = builder.start().await.unwrap();
        let out = runtime
            .client()
            .start(notify, "ada".to_owned())
            .await
            .unwrap();
        assert_eq!(
            out.wait(WAIT).await.unwrap(),
            ["text to ada", "text to ada"],
            "replace_first: {replace_first}"
        );
        runtime.shutdown().await;
    }
}

#[tokio::test]
async fn two_different_replacements_of_one_name_are_refused() {
    let builder = Runtime::builder()
        .register(email::send)
        .replace(sms::send)
        .replace(sms::text);
    let text = start_error(builder).await.to_string();
    assert!(text.contains("`registration::sms::send`"), "{text}");
    assert!(text.contains("`registration::sms::text`"), "{text}");
    // The same replacement twice is as harmless as the same registration twice.
    let runtime = Runtime::builder()
        .in_memory()
        .register(email::send)
        .replace(sms::send)
        .replace(sms::send)
        .start()
        .await
        .unwrap();
    runtime.shutdown().await;
}

#[tokio::test]
async fn replace_entity_swaps_an_entity_type_in() {
    let runtime = Runtime::builder()
        .in_memory()
        .register_entity::<shop::Counter>()
        .replace_entity::<Tally>()
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    // Both types are named `Counter`: the signal runs `Tally`'s `add`.
    client
        .entity::<shop::Counter>("k")
        .signal()
        .add(1)
        .await
        .unwrap();
    durable_testkit::eventually_eq("Tally's add applied", Some(10), async || {
        client
            .entity_state::<Tally>("k")
            .await
            .unwrap()
            .map(|tally| tally.value)
    })
    .await;
    runtime.shutdown().await;
}
