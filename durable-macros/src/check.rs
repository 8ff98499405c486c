//! The body check of `#[orchestrator]`: rejects APIs that break replay — the wall clock,
//! randomness, sleeping, threads and tasks, nondeterministic concurrency, I/O, the
//! environment, hash-ordered collections, `unsafe`, thread-locals and blocking — each with
//! an error at the offending span that names the replay-safe alternative.
//!
//! What it sees: every path, type, method call and macro in the function body, including
//! closures, nested blocks, nested functions, async blocks and the arguments of macros
//! that parse as expressions, after resolving the `use` declarations made inside the body
//! (renames and globs included). What it cannot see: code in other functions the body
//! calls, and `use` declarations outside the body — for those it recognises the
//! distinctive spellings (`SystemTime::now`, `thread::sleep`, `File::open`, `fs::read`,
//! `thread_rng`, ...), not every possible alias. Names bound locally (a variable called
//! `sleep` or `now`) are never flagged as bare calls.
//!
//! A reviewed exception is written `#[durable::allow_nondeterministic("reason")]` on a
//! statement or expression; the attribute is removed from the emitted code.

use quote::ToTokens;
use std::collections::{BTreeMap, BTreeSet};
use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{
    Attribute, Block, Expr, ExprMethodCall, Item, LitStr, Macro, Pat, Path, Stmt, Type, UseTree,
};

/// Checks an orchestrator body and removes the escape-hatch attributes from it.
pub(crate) fn check_body(body: &mut Block) -> syn::Result<()> {
    let mut scope = Scope::default();
    scope.visit_block(body);
    let mut checker = Checker {
        scope,
        errors: Vec::new(),
        allowed: 0,
    };
    checker.visit_block_mut(body);
    let mut errors = checker.errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(mut first) => {
            errors.for_each(|error| first.combine(error));
            Err(first)
        }
    }
}

/// Why a family of APIs breaks replay, and what to use instead.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Category {
    Clock,
    Random,
    Sleep,
    Thread,
    Concurrency,
    Io,
    Environment,
    HashOrder,
    Unsafe,
    ThreadLocal,
    Blocking,
}

impl Category {
    fn explain(self) -> (&'static str, &'static str) {
        match self {
            Category::Clock => (
                "it reads the wall clock, which returns a different time when the orchestrator is replayed",
                "use `ctx.current_utc_datetime()`, the time of the current turn as recorded in history",
            ),
            Category::Random => (
                "it returns a different value on every run, so replay takes another path",
                "use `ctx.new_guid()` for ids, or draw random values in an activity and use its result",
            ),
            Category::Sleep => (
                "it waits on a timer that does not survive a restart and blocks or escapes the orchestration",
                "use `ctx.sleep(duration)` or `ctx.create_timer(time)`: durable timers recorded in history",
            ),
            Category::Thread => (
                "it starts work that history does not record, which replay can neither see nor repeat",
                "do the work in an activity (`ctx.call_activity`), and use `ctx.join_all` to run durable tasks concurrently",
            ),
            Category::Concurrency => (
                "it picks a winner by polling order, which can differ when the orchestrator is replayed",
                "use `ctx.join_all` to wait for several durable tasks, or `ctx.select` for the first one (decided by history order)",
            ),
            Category::Io => (
                "it does I/O, whose result can differ on replay and which would run again on every replay",
                "do the I/O in an activity and use its result",
            ),
            Category::Environment => (
                "it reads the process environment, which can differ between a run and its replay",
                "pass the value in as part of the orchestrator's input",
            ),
            Category::HashOrder => (
                "iterating a HashMap or HashSet visits entries in an order that differs from process to process",
                "use `BTreeMap` or `BTreeSet`, or sort the entries explicitly",
            ),
            Category::Unsafe => (
                "unsafe code (reading a `static mut`, say) can observe state that differs on replay",
                "keep orchestrator state in local variables, and pass shared data in the input or fetch it in an activity",
            ),
            Category::ThreadLocal => (
                "thread-local and global mutable state differs between the process that ran the orchestration and the one that replays it",
                "keep state in local variables, or pass it in the input",
            ),
            Category::Blocking => (
                "it blocks the orchestration thread on a future history does not record",
                "`.await` durable tasks from `ctx` instead, and do blocking work in an activity",
            ),
        }
    }
}

#[derive(Clone, Copy)]
enum Anchor {
    /// The resolved path starts with the pattern (fully qualified or imported in the body).
    Start,
    /// The path ends with the pattern (imported outside the body: `SystemTime::now`).
    End,
    /// The path has this segment anywhere.
    Contains,
}

/// One rejected spelling. `*` matches any one segment.
struct Rule {
    anchor: Anchor,
    pattern: &'static [&'static str],
    category: Category,
}

const fn rule(anchor: Anchor, pattern: &'static [&'static str], category: Category) -> Rule {
    Rule {
        anchor,
        pattern,
        category,
    }
}

use Anchor::{Contains, End, Start};
use Category::*;

/// The rejected paths. Single-segment `End` rules match bare calls (`sleep(..)` after a
/// `use` outside the body), so they are kept to distinctive names.
const PATH_RULES: &[Rule] = &[
    // The wall clock.
    rule(End, &["SystemTime", "now"], Clock),
    rule(End, &["Instant", "now"], Clock),
    rule(End, &["Utc", "now"], Clock),
    rule(End, &["Local", "now"], Clock),
    rule(End, &["OffsetDateTime", "now_utc"], Clock),
    rule(End, &["OffsetDateTime", "now_local"], Clock),
    rule(End, &["Timestamp", "now"], Clock),
    rule(End, &["Zoned", "now"], Clock),
    // Randomness and fresh ids.
    rule(Start, &["rand"], Random),
    rule(Start, &["fastrand"], Random),
    rule(Start, &["getrandom"], Random),
    rule(End, &["thread_rng"], Random),
    rule(End, &["random"], Random),
    rule(End, &["OsRng"], Random),
    rule(End, &["Uuid", "new_v4"], Random),
    rule(End, &["Uuid", "new_v7"], Random),
    rule(End, &["Uuid", "now_v7"], Random),
    rule(End, &["Uuid", "now_v6"], Random),
    rule(End, &["Uuid", "now_v1"], Random),
    rule(End, &["RandomState", "new"], Random),
    // Sleeping and timers.
    rule(End, &["thread", "sleep"], Sleep),
    rule(End, &["thread", "sleep_ms"], Sleep),
    rule(End, &["time", "sleep"], Sleep),
    rule(End, &["time", "sleep_until"], Sleep),
    rule(End, &["time", "timeout"], Sleep),
    rule(End, &["time", "timeout_at"], Sleep),
    rule(End, &["time", "interval"], Sleep),
    rule(End, &["time", "interval_at"], Sleep),
    rule(End, &["sleep"], Sleep),
    rule(End, &["sleep_until"], Sleep),
    // Threads and tasks.
    rule(End, &["thread", "spawn"], Thread),
    rule(End, &["thread", "scope"], Thread),
    rule(End, &["thread", "Builder"], Thread),
    rule(End, &["tokio", "spawn"], Thread),
    rule(End, &["task", "spawn"], Thread),
    rule(End, &["task", "spawn_local"], Thread),
    rule(End, &["spawn_blocking"], Thread),
    rule(End, &["spawn_local"], Thread),
    rule(End, &["spawn"], Thread),
    rule(End, &["JoinSet"], Thread),
    // Nondeterministic concurrency.
    rule(End, &["future", "select"], Concurrency),
    rule(End, &["future", "select_all"], Concurrency),
    rule(End, &["future", "select_ok"], Concurrency),
    rule(End, &["FuturesUnordered"], Concurrency),
    // I/O.
    rule(Start, &["std", "fs"], Io),
    rule(Start, &["tokio", "fs"], Io),
    rule(Start, &["std", "net"], Io),
    rule(Start, &["tokio", "net"], Io),
    rule(Start, &["std", "process"], Io),
    rule(Start, &["tokio", "process"], Io),
    rule(Start, &["reqwest"], Io),
    rule(Start, &["std", "io", "stdin"], Io),
    rule(End, &["fs", "*"], Io),
    rule(End, &["File", "*"], Io),
    rule(End, &["OpenOptions", "*"], Io),
    rule(End, &["TcpStream", "*"], Io),
    rule(End, &["TcpListener", "*"], Io),
    rule(End, &["UdpSocket", "*"], Io),
    rule(End, &["Command", "new"], Io),
    rule(End, &["io", "stdin"], Io),
    rule(End, &["stdin"], Io),
    // The environment.
    rule(Start, &["std", "env"], Environment),
    rule(End, &["env", "var"], Environment),
    rule(End, &["env", "var_os"], Environment),
    rule(End, &["env", "vars"], Environment),
    rule(End, &["env", "vars_os"], Environment),
    rule(End, &["env", "args"], Environment),
    rule(End, &["env", "args_os"], Environment),
    rule(End, &["env", "current_dir"], Environment),
    rule(End, &["env", "home_dir"], Environment),
    rule(End, &["env", "temp_dir"], Environment),
    // Hash-ordered collections.
    rule(Contains, &["HashMap"], HashOrder),
    rule(Contains, &["HashSet"], HashOrder),
    // Blocking on futures.
    rule(End, &["executor", "block_on"], Blocking),
    rule(End, &["block_on"], Blocking),
];

/// Macros that race futures by polling order.
const CONCURRENCY_MACROS: &[&str] = &["select", "join", "try_join", "select_biased"];

/// The `use` declarations inside the body, and the names it binds locally.
#[derive(Default)]
struct Scope {
    aliases: BTreeMap<String, Vec<String>>,
    globs: Vec<Vec<String>>,
    locals: BTreeSet<String>,
}

impl Scope {
    fn add_use(&mut self, prefix: &mut Vec<String>, tree: &UseTree) {
        match tree {
            UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.add_use(prefix, &path.tree);
                prefix.pop();
            }
            UseTree::Name(name) => {
                let mut full = prefix.clone();
                full.push(name.ident.to_string());
                self.aliases.insert(name.ident.to_string(), full);
            }
            UseTree::Rename(rename) => {
                let mut full = prefix.clone();
                full.push(rename.ident.to_string());
                self.aliases.insert(rename.rename.to_string(), full);
            }
            UseTree::Glob(_) => self.globs.push(prefix.clone()),
            UseTree::Group(group) => {
                for tree in &group.items {
                    self.add_use(prefix, tree);
                }
            }
        }
    }

    /// The full paths `segments` may stand for: through the body's `use` declarations
    /// first, then as written.
    fn resolve(&self, segments: &[String]) -> Vec<Vec<String>> {
        let mut candidates = Vec::new();
        if let Some((first, rest)) = segments.split_first()
            && !matches!(first.as_str(), "self" | "crate" | "super")
        {
            if let Some(full) = self.aliases.get(first) {
                let mut resolved = full.clone();
                resolved.extend(rest.iter().cloned());
                candidates.push(resolved);
            }
            for glob in &self.globs {
                let mut resolved = glob.clone();
                resolved.extend(segments.iter().cloned());
                candidates.push(resolved);
            }
        }
        candidates.push(segments.to_vec());
        candidates
    }
}

impl<'ast> Visit<'ast> for Scope {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut prefix = Vec::new();
        self.add_use(&mut prefix, &item.tree);
    }

    fn visit_pat_ident(&mut self, pat: &'ast syn::PatIdent) {
        self.locals.insert(pat.ident.to_string());
        syn::visit::visit_pat_ident(self, pat);
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        // A function defined in the body is a local name too.
        self.locals.insert(item.sig.ident.to_string());
        syn::visit::visit_item_fn(self, item);
    }
}

struct Checker {
    scope: Scope,
    errors: Vec<syn::Error>,
    /// Depth of `allow_nondeterministic` regions being visited.
    allowed: usize,
}

impl Checker {
    /// Reports `what` at the span of `at` (all of it, first token to last).
    fn report(&mut self, at: &dyn ToTokens, what: &str, category: Category) {
        if self.allowed > 0 {
            return;
        }
        let (why, instead) = category.explain();
        self.errors.push(syn::Error::new_spanned(
            at,
            format!(
                "{what} is not allowed in an orchestrator: {why}.\n\
                 help: {instead}.\n\
                 note: orchestrators are replayed from their history and must do the same thing every time; \
                 a reviewed exception can be marked `#[durable::allow_nondeterministic(\"why it is safe\")]`"
            ),
        ));
    }

    fn check_path(&mut self, path: &Path) {
        let segments: Vec<String> = path
            .segments
            .iter()
            .map(|segment| segment.ident.to_string())
            .collect();
        let Some((category, resolved)) = self.classify(&segments) else {
            return;
        };
        let written = segments.join("::");
        let resolved = resolved.join("::");
        let what = if resolved == written {
            format!("`{written}`")
        } else {
            format!("`{written}` (`{resolved}`)")
        };
        self.report(path, &what, category);
    }

    /// The category of the first rule `segments` matches, with the full path it matched as.
    fn classify(&self, segments: &[String]) -> Option<(Category, Vec<String>)> {
        let bare_local = segments.len() == 1 && self.scope.locals.contains(&segments[0]);
        for candidate in self.scope.resolve(segments) {
            for rule in PATH_RULES {
                let single = rule.pattern.len() == 1 && matches!(rule.anchor, End);
                // A bare name bound in the body (`let sleep = ...`) is the user's own.
                if single && bare_local && candidate.len() == 1 {
                    continue;
                }
                if matches_rule(rule, &candidate) {
                    return Some((rule.category, candidate));
                }
            }
        }
        None
    }

    /// Handles the escape hatch on `attrs`; returns whether the region is allowed.
    fn enter_allow(&mut self, attrs: &mut Vec<Attribute>) -> bool {
        let mut allowed = false;
        let mut kept = Vec::with_capacity(attrs.len());
        for attr in attrs.drain(..) {
            if is_allow_attribute(&attr) {
                if let Err(error) = check_reason(&attr) {
                    self.errors.push(error);
                }
                allowed = true;
            } else {
                kept.push(attr);
            }
        }
        *attrs = kept;
        if allowed {
            self.allowed += 1;
        }
        allowed
    }

    fn check_macro(&mut self, mac: &Macro) {
        let name = mac
            .path
            .segments
            .last()
            .map(|segment| segment.ident.to_string())
            .unwrap_or_default();
        let text = path_text(&mac.path);
        if CONCURRENCY_MACROS.contains(&name.as_str()) {
            self.report(&mac.path, &format!("`{text}!`"), Concurrency);
            return;
        }
        if name == "thread_local" {
            self.report(&mac.path, &format!("`{text}!`"), ThreadLocal);
            return;
        }
        // Look inside macros whose arguments are expressions (`vec!`, `format!`,
        // `assert_eq!`, ...).
        if let Ok(args) = mac
            .parse_body_with(syn::punctuated::Punctuated::<Expr, syn::Token![,]>::parse_terminated)
        {
            for mut arg in args {
                self.visit_expr_mut(&mut arg);
            }
        } else if let Ok(mut repeat) = mac.parse_body::<syn::ExprRepeat>() {
            self.visit_expr_repeat_mut(&mut repeat);
        }
    }
}

fn matches_rule(rule: &Rule, path: &[String]) -> bool {
    let pattern = rule.pattern;
    let same = |p: &str, s: &String| p == "*" || p == s;
    match rule.anchor {
        Start => path.len() >= pattern.len() && pattern.iter().zip(path).all(|(p, s)| same(p, s)),
        End => {
            path.len() >= pattern.len()
                && pattern
                    .iter()
                    .rev()
                    .zip(path.iter().rev())
                    .all(|(p, s)| same(p, s))
        }
        Contains => path
            .iter()
            .any(|segment| pattern.contains(&segment.as_str())),
    }
}

fn path_text(path: &Path) -> String {
    path.segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

fn is_allow_attribute(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "allow_nondeterministic")
}

/// The escape hatch must say why: `#[durable::allow_nondeterministic("reason")]`.
fn check_reason(attr: &Attribute) -> syn::Result<()> {
    let advice = "say why this is safe to replay: `#[durable::allow_nondeterministic(\"reason\")]`";
    let syn::Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, advice));
    };
    let reason: LitStr = list
        .parse_args()
        .map_err(|_| syn::Error::new_spanned(attr, advice))?;
    if reason.value().trim().is_empty() {
        return Err(syn::Error::new_spanned(reason, advice));
    }
    Ok(())
}

/// The attributes of an expression.
fn expr_attrs_mut(expr: &mut Expr) -> Option<&mut Vec<Attribute>> {
    macro_rules! attrs {
        ($($variant:ident),*) => {
            match expr {
                $(Expr::$variant(inner) => Some(&mut inner.attrs),)*
                _ => None,
            }
        };
    }
    attrs!(
        Array, Assign, Async, Await, Binary, Block, Break, Call, Cast, Closure, Const, Continue,
        Field, ForLoop, Group, If, Index, Infer, Let, Lit, Loop, Macro, Match, MethodCall, Paren,
        Path, Range, RawAddr, Reference, Repeat, Return, Struct, Try, TryBlock, Tuple, Unary,
        Unsafe, While, Yield
    )
}

fn is_screaming(name: &str) -> bool {
    name.chars().any(char::is_alphabetic)
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

impl VisitMut for Checker {
    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        let allowed = expr_attrs_mut(expr).is_some_and(|attrs| self.enter_allow(attrs));
        match expr {
            Expr::Unsafe(block) => {
                let token = block.unsafe_token;
                self.report(&token, "`unsafe`", Unsafe);
            }
            Expr::Macro(mac) => self.check_macro(&mac.mac.clone()),
            _ => {}
        }
        syn::visit_mut::visit_expr_mut(self, expr);
        if allowed {
            self.allowed -= 1;
        }
    }

    fn visit_stmt_mut(&mut self, stmt: &mut Stmt) {
        let allowed = match stmt {
            Stmt::Local(local) => self.enter_allow(&mut local.attrs),
            Stmt::Macro(mac) => self.enter_allow(&mut mac.attrs),
            _ => false,
        };
        if let Stmt::Macro(mac) = stmt {
            let mac = mac.mac.clone();
            self.check_macro(&mac);
        }
        syn::visit_mut::visit_stmt_mut(self, stmt);
        if allowed {
            self.allowed -= 1;
        }
    }

    fn visit_item_mut(&mut self, item: &mut Item) {
        match item {
            Item::Static(item) if matches!(item.mutability, syn::StaticMutability::Mut(_)) => {
                let what = format!("`static mut {}`", item.ident);
                self.report(&item.ident, &what, Unsafe);
            }
            Item::Macro(item) => {
                let mac = item.mac.clone();
                self.check_macro(&mac);
            }
            Item::Fn(function) => {
                if let syn::Safety::Unsafe(token) = function.sig.safety {
                    self.report(&token, "`unsafe fn`", Unsafe);
                }
            }
            // `use` declarations were read by `Scope`; their paths are not calls.
            Item::Use(_) => return,
            _ => {}
        }
        syn::visit_mut::visit_item_mut(self, item);
    }

    fn visit_path_mut(&mut self, path: &mut Path) {
        self.check_path(path);
        syn::visit_mut::visit_path_mut(self, path);
    }

    fn visit_type_mut(&mut self, ty: &mut Type) {
        // Paths inside types are visited through `visit_path_mut`.
        syn::visit_mut::visit_type_mut(self, ty);
    }

    fn visit_expr_method_call_mut(&mut self, call: &mut ExprMethodCall) {
        let method = call.method.to_string();
        if method == "block_on" {
            let at = call.method.clone();
            self.report(&at, "`.block_on(..)`", Blocking);
        }
        if matches!(method.as_str(), "with" | "with_borrow" | "with_borrow_mut")
            && let Expr::Path(receiver) = &*call.receiver
            && let Some(ident) = receiver.path.get_ident()
            && is_screaming(&ident.to_string())
        {
            let what = format!("`{ident}.{method}(..)`");
            let at = call.method.clone();
            self.report(&at, &what, ThreadLocal);
        }
        syn::visit_mut::visit_expr_method_call_mut(self, call);
    }

    fn visit_pat_mut(&mut self, pat: &mut Pat) {
        // Patterns bind names; a path in a pattern (an enum variant) is not a call.
        let _ = pat;
    }
}
