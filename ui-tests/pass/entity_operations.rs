//! Every method shape `#[entity]` accepts, and every way to reach an operation: calls and
//! signals from an orchestrator, signals from a client and from another entity.
use durable::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Default, Serialize, Deserialize)]
struct Inventory {
    items: BTreeMap<String, u64>,
    log: Vec<String>,
}

#[derive(Debug)]
struct OutOfStock(String);

impl std::fmt::Display for OutOfStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "out of stock: {}", self.0)
    }
}

impl std::error::Error for OutOfStock {}

#[derive(Clone, Serialize, Deserialize)]
struct Restock {
    item: String,
    count: u64,
}

#[entity(name = "inventory")]
impl Inventory {
    /// `&mut self`, no arguments, no output.
    fn clear(&mut self) {
        self.items.clear();
    }

    /// `&self`, no arguments, a value.
    fn total(&self) -> u64 {
        self.items.values().sum()
    }

    /// One argument.
    fn count(&self, item: String) -> u64 {
        self.items.get(&item).copied().unwrap_or(0)
    }

    /// Several arguments, a `mut` binding, a struct argument.
    fn add(&mut self, item: String, mut count: u64, note: Option<Restock>) {
        count += note.map_or(0, |restock| restock.count);
        *self.items.entry(item).or_default() += count;
    }

    /// A tuple pattern and a wildcard: the proxy names them.
    pub fn add_pair(&mut self, (a, b): (String, String), _: u8) {
        self.add(a, 1, None);
        self.add(b, 1, None);
    }

    /// `Result` with a `String` error.
    fn take(&mut self, item: String) -> Result<u64, String> {
        let left = self.items.get_mut(&item).ok_or("unknown item")?;
        *left = left.checked_sub(1).ok_or("none left")?;
        Ok(*left)
    }

    /// `Result` with a `std::error::Error` and a unit output.
    fn take_all(&mut self, item: String) -> Result<(), OutOfStock> {
        match self.items.remove(&item) {
            Some(_) => Ok(()),
            None => Err(OutOfStock(item)),
        }
    }

    /// `Result` with `durable::Error`, spelled with its path.
    fn check(&self) -> std::result::Result<bool, durable::Error> {
        Ok(!self.items.is_empty())
    }

    /// The context, read-only.
    fn whoami(&self, ctx: &EntityContext) -> String {
        ctx.entity_id().key().to_owned()
    }

    /// The context and several arguments; signals another entity.
    fn restock(&mut self, ctx: &EntityContext, restock: Restock, notify: bool) {
        if notify {
            ctx.entity::<Audit>("audit").signal().record(restock.item.clone());
        }
        self.add(restock.item, restock.count, None);
    }

    /// The context alone; the context parameter named like a generated one.
    fn forget(&mut self, input: &EntityContext) {
        input.delete_state();
    }

    /// Arguments named like the generated code's own variables.
    fn rename(&mut self, ctx: String, input: String, output: String) {
        self.log.push(format!("{ctx}{input}{output}"));
    }

    /// `Self` as output and argument.
    fn snapshot(&self) -> Self {
        Inventory {
            items: self.items.clone(),
            log: self.log.clone(),
        }
    }

    fn replace(&mut self, state: Self) {
        *self = state;
    }

    /// A raw identifier: the operation is named `type`.
    fn r#type(&self) -> String {
        "inventory".to_owned()
    }

    /// One operation under two exclusive `cfg`s, and one that is compiled out.
    #[cfg(debug_assertions)]
    fn build(&self) -> String {
        "debug".to_owned()
    }

    #[cfg(not(debug_assertions))]
    fn build(&self) -> String {
        "release".to_owned()
    }

    #[cfg(any())]
    fn never(&self) {}

    /// A `const fn` is an operation like any other.
    const fn zero(&self) -> u64 {
        0
    }

    /// Associated constants may sit in the block.
    const LIMIT: u64 = 1_000;
}

// Helpers without `self` live in another block.
impl Inventory {
    fn with(item: &str, count: u64) -> Inventory {
        let mut inventory = Inventory::default();
        inventory.add(item.to_owned(), count, None);
        inventory
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Audit {
    entries: Vec<String>,
}

#[entity]
impl Audit {
    fn record(&mut self, entry: String) {
        self.entries.push(entry);
    }
}

/// An enum entity, and a concrete instance of a generic type.
#[derive(Default, Serialize, Deserialize)]
enum Light {
    #[default]
    Off,
    On,
}

#[entity]
impl Light {
    fn toggle(&mut self) -> bool {
        *self = match self {
            Light::Off => Light::On,
            Light::On => Light::Off,
        };
        matches!(self, Light::On)
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Register<T> {
    value: T,
}

#[entity(name = "register-u64")]
impl Register<u64> {
    fn set(&mut self, value: u64) -> u64 {
        std::mem::replace(&mut self.value, value)
    }
}

#[orchestrator]
async fn shop(ctx: OrchestrationContext, item: String) -> Result<String, Error> {
    let inventory = ctx.entity::<Inventory>("main");
    inventory.clear().await?;
    inventory.add(item.clone(), 3, None).await?;
    inventory.add_pair(("a".to_owned(), "b".to_owned()), 0).await?;
    let total: u64 = inventory.total().await?;
    let count: u64 = inventory.count(item.clone()).await?;
    let left: u64 = inventory.take(item.clone()).await?;
    let (): () = inventory.take_all(item.clone()).await?;
    let checked: bool = inventory.check().await?;
    let key: String = inventory.whoami().await?;
    let restock = Restock { item: item.clone(), count: 2 };
    inventory.restock(restock.clone(), true).await?;
    inventory.rename("a".to_owned(), "b".to_owned(), "c".to_owned()).await?;
    let snapshot: Inventory = inventory.snapshot().await?;
    inventory.replace(snapshot).await?;
    let kind: String = inventory.r#type().await?;
    let build: String = inventory.build().await?;
    let zero: u64 = inventory.zero().await?;
    let id: &EntityId = inventory.id()?;
    let on: bool = ctx.entity::<Light>("hall").toggle().await?;
    let old: u64 = ctx.entity::<Register<u64>>("r").set(7).await?;

    let signals = ctx.entity::<Inventory>("main").signal();
    signals.clear();
    signals.add(item.clone(), 1, Some(restock.clone()));
    signals.restock(restock, false);
    signals.forget();
    ctx.entity::<Audit>("audit").signal().record(id.to_string());

    let audit = ctx.entity_id::<Audit>("audit")?;
    let lock = ctx.lock_entities(&[audit]).await?;
    ctx.entity::<Audit>("audit").record("locked".to_owned()).await?;
    drop(lock);
    Ok(format!("{total}{count}{left}{checked}{key}{kind}{build}{zero}{on}{old}"))
}

async fn client_side(client: Client) -> Result<(), durable::client::Error> {
    let inventory = client.entity::<Inventory>("main");
    inventory.signal().add("x".to_owned(), 1, None).await?;
    inventory.signal().clear().await?;
    inventory.signal().rename("a".to_owned(), "b".to_owned(), "c".to_owned()).await?;
    let state: Option<Inventory> = inventory.state().await?;
    let _ = state.map(|state| state.items.len());
    let _: Option<Light> = client.entity_state::<Light>("hall").await?;
    client.entity::<Light>("hall").signal().toggle().await
}

fn main() {
    assert_eq!(<Inventory as Entity>::NAME, "inventory");
    assert_eq!(<Audit as Entity>::NAME, "audit"); // lowercased: entity names are case-insensitive
    assert_eq!(<Register<u64> as Entity>::NAME, "register-u64");
    let operations = <Inventory as Entity>::operations();
    assert!(operations.contains(&"type"));
    assert!(operations.contains(&"build"));
    assert!(!operations.contains(&"never"));
    assert_eq!(operations.iter().filter(|name| **name == "build").count(), 1);
    assert!(<Inventory as Entity>::is_read_only("total"));
    assert!(<Inventory as Entity>::is_read_only("build"));
    assert!(!<Inventory as Entity>::is_read_only("add"));
    assert!(!<Inventory as Entity>::is_read_only("nope"));
    assert_eq!(Inventory::LIMIT, 1_000);
    assert_eq!(Inventory::with("x", 2).total(), 2);
    let _ = (shop, client_side);
}
