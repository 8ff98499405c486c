//! Keeps the house in order, by reading the source:
//!
//! - no import circle crosses a top-level folder of `durable/src` (circles inside the
//!   runtime's own message loop, all under `runtime/`, are fine; the core is another crate,
//!   so the compiler already keeps it a leaf);
//! - no function in the core, the runtime, the client or the HTTP API is longer than a
//!   screen (70 lines, tests excluded);
//! - every source file opens with a `//!` paragraph that says what it is for.
//!
//! What the core may not call (clocks, sleeping, spawning, `HashMap`) is checked by clippy,
//! with `durable/core/clippy.toml`.

use proc_macro2::Span;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::spanned::Spanned;
use syn::visit::Visit;

/// The longest a function may be, from its `fn` line to its closing brace.
const FUNCTION_LINES_MAX: usize = 70;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("a readable directory") {
            let path = entry.expect("a readable entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn parse(path: &Path) -> syn::File {
    let text = std::fs::read_to_string(path).expect("a readable file");
    syn::parse_file(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Import circles

/// The module path of a file of `durable/src`: `runtime/shard/mod.rs` is
/// `runtime::shard`, `lib.rs` is the crate root (empty).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("a file of src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Collects the module paths a file names: `crate::…` and `super::…` in `use` items and
/// in expressions and types.
struct References<'a> {
    module: &'a [String],
    /// Every module of the crate, to tell a child module's name from anything else.
    modules: &'a BTreeSet<Vec<String>>,
    found: BTreeSet<Vec<String>>,
    /// Inside a `#[cfg(test)]` item: tests may reach anywhere.
    in_tests: bool,
}

impl References<'_> {
    fn add(&mut self, segments: Vec<String>) {
        if self.in_tests {
            return;
        }
        // The module a `super` is relative to: a `mod.rs` is its directory's module.
        let mut base: Vec<String> = self.module.to_vec();
        let mut path = segments.into_iter().peekable();
        match path.peek().map(String::as_str) {
            Some("crate") => {
                path.next();
                base.clear();
            }
            Some("super") => {
                // Each `super` is the parent of the module before it (a `mod.rs` is its
                // directory's module already).
                while path.peek().map(String::as_str) == Some("super") {
                    path.next();
                    base.pop();
                }
            }
            Some("self") => {
                path.next();
            }
            // A child module named without a prefix (`use shard::ShardMsg` in `runtime`).
            Some(first) => {
                let mut child = base.clone();
                child.push(first.to_owned());
                if !self.modules.contains(&child) {
                    return;
                }
            }
            None => return,
        }
        base.extend(path);
        self.found.insert(base);
    }
}

fn segments(path: &syn::Path) -> Vec<String> {
    path.segments.iter().map(|s| s.ident.to_string()).collect()
}

fn use_paths(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            use_paths(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) => {
            let mut full = prefix.clone();
            full.push(name.ident.to_string());
            out.push(full);
        }
        syn::UseTree::Rename(rename) => {
            let mut full = prefix.clone();
            full.push(rename.ident.to_string());
            out.push(full);
        }
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                use_paths(tree, prefix, out);
            }
        }
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .meta
                .require_list()
                .is_ok_and(|list| list.tokens.to_string().contains("test"))
    })
}

impl<'ast> Visit<'ast> for References<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut paths = Vec::new();
        use_paths(&item.tree, &mut Vec::new(), &mut paths);
        for path in paths {
            self.add(path);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.add(segments(path));
        syn::visit::visit_path(self, path);
    }

    // `pub(super)` and `pub(in crate::…)` say who may look, not what this file uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        let was = self.in_tests;
        self.in_tests |= is_cfg_test(&item.attrs);
        syn::visit::visit_item_mod(self, item);
        self.in_tests = was;
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        let was = self.in_tests;
        self.in_tests |= is_cfg_test(&item.attrs);
        syn::visit::visit_item_fn(self, item);
        self.in_tests = was;
    }
}

/// The file a module path lands in: the longest prefix that is a file's module.
fn resolve<'a>(
    path: &[String],
    files: &'a BTreeMap<Vec<String>, PathBuf>,
) -> Option<&'a Vec<String>> {
    (0..=path.len())
        .rev()
        .find_map(|len| files.get_key_value(&path[..len]).map(|(module, _)| module))
}

/// The strongly connected components of a graph (Tarjan), as sets of nodes.
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, node: &'a Vec<String>) {
            let at = self.index.len();
            self.index.insert(node, at);
            self.low.insert(node, at);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.edges.get(node).into_iter().flatten() {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[next].min(self.low[node]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.index[next].min(self.low[node]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    component.push(member.clone());
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !tarjan.index.contains_key(node) {
            tarjan.visit(node);
        }
    }
    tarjan.found
}

/// The files of `durable/src` by module.
fn modules() -> BTreeMap<Vec<String>, PathBuf> {
    let src = root().join("src");
    rust_files(&src)
        .into_iter()
        .map(|file| (module_of(&src, &file), file))
        .collect()
}

/// The top-level folder of `durable/src` a file is in; a file at the top is a folder of
/// its own.
fn folder_of(file: &Path) -> String {
    let relative = file
        .strip_prefix(root().join("src"))
        .expect("a file of src");
    relative
        .iter()
        .next()
        .map(|part| part.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The import graph of `durable/src`, file to file.
fn import_graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = modules();
    let modules: BTreeSet<Vec<String>> = files.keys().cloned().collect();
    let mut edges = BTreeMap::new();
    for (module, file) in &files {
        let name = file.file_name().and_then(|name| name.to_str());
        let mut references = References {
            module,
            modules: &modules,
            found: BTreeSet::new(),
            in_tests: name == Some("tests.rs"),
        };
        references.visit_file(&parse(file));
        let targets: BTreeSet<Vec<String>> = references
            .found
            .iter()
            .filter_map(|path| resolve(path, &files))
            // The crate root re-exports; naming it is naming what it re-exports, which
            // the file could have named directly. It is not a module of its own here.
            .filter(|target| !target.is_empty() && *target != module)
            .cloned()
            .collect();
        edges.insert(module.clone(), targets);
    }
    edges
}

/// The one folder whose files may import each other in a circle: the runtime's message
/// loop (the runtime starts the shards, the writer and the services, and they answer
/// through its handle).
const CIRCLE_ALLOWED_IN: &str = "runtime";

#[test]
fn no_import_circle_outside_the_runtime_loop() {
    let edges = import_graph();
    assert!(
        edges.len() > 20,
        "the graph is missing files: {:?}",
        edges.keys()
    );
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 40,
        "the graph is missing edges"
    );
    let files = modules();
    let unwanted: Vec<String> = circles(&edges)
        .into_iter()
        .filter(|circle| {
            let folders: BTreeSet<String> = circle
                .iter()
                .map(|module| folder_of(&files[module]))
                .collect();
            folders.len() > 1 || !folders.contains(CIRCLE_ALLOWED_IN)
        })
        .map(|circle| {
            circle
                .iter()
                .map(|module| module.join("::"))
                .collect::<Vec<_>>()
                .join(" ↔ ")
        })
        .collect();
    assert!(
        unwanted.is_empty(),
        "import circles across folders of durable/src, or inside a folder other than \
         {CIRCLE_ALLOWED_IN}/ (move what both sides need into a file of its own):\n{}",
        unwanted.join("\n")
    );
}

#[test]
fn the_circle_finder_finds_circles() {
    let node = |name: &str| vec![name.to_owned()];
    let mut edges = BTreeMap::new();
    edges.insert(node("a"), BTreeSet::from([node("b")]));
    edges.insert(node("b"), BTreeSet::from([node("c")]));
    edges.insert(node("c"), BTreeSet::from([node("a")]));
    edges.insert(node("d"), BTreeSet::from([node("a")]));
    assert_eq!(circles(&edges), vec![vec![node("a"), node("b"), node("c")]]);
    edges.insert(node("c"), BTreeSet::new());
    assert!(circles(&edges).is_empty());
}

// ---------------------------------------------------------------------------------------
// Function length

/// Every function with a body and its length in lines, outside tests.
struct Functions {
    found: Vec<(String, usize, usize)>,
    in_tests: bool,
}

impl Functions {
    fn add(&mut self, name: &syn::Ident, span: Span) {
        if self.in_tests {
            return;
        }
        let (start, end) = (span.start().line, span.end().line);
        self.found.push((name.to_string(), start, end - start + 1));
    }
}

impl<'ast> Visit<'ast> for Functions {
    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        let was = self.in_tests;
        self.in_tests |= is_cfg_test(&item.attrs);
        // From the `fn` line: attributes and doc comments do not count.
        let span = item
            .sig
            .fn_token
            .span
            .join(item.block.span())
            .unwrap_or(item.span());
        self.add(&item.sig.ident, span);
        syn::visit::visit_item_fn(self, item);
        self.in_tests = was;
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        let span = item
            .sig
            .fn_token
            .span
            .join(item.block.span())
            .unwrap_or(item.span());
        self.add(&item.sig.ident, span);
        syn::visit::visit_impl_item_fn(self, item);
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(block) = &item.default {
            let span = item
                .sig
                .fn_token
                .span
                .join(block.span())
                .unwrap_or(item.span());
            self.add(&item.sig.ident, span);
        }
        syn::visit::visit_trait_item_fn(self, item);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        let was = self.in_tests;
        self.in_tests |= is_cfg_test(&item.attrs);
        syn::visit::visit_item_mod(self, item);
        self.in_tests = was;
    }
}

/// The files whose functions must fit on a screen: the core, the runtime, the client and
/// the HTTP API, without their test files.
fn screened_files() -> Vec<PathBuf> {
    let root = root();
    [
        root.join("core/src"),
        root.join("src/runtime"),
        root.join("src/client"),
        root.join("src/http"),
    ]
    .iter()
    .flat_map(|dir| rust_files(dir))
    .filter(|file| {
        let is_test = file.file_name().is_some_and(|name| name == "tests.rs")
            || file.components().any(|part| part.as_os_str() == "tests");
        !is_test
    })
    .collect()
}

#[test]
fn functions_fit_on_a_screen() {
    let mut too_long = Vec::new();
    let mut counted = 0;
    for file in screened_files() {
        let mut functions = Functions {
            found: Vec::new(),
            in_tests: false,
        };
        functions.visit_file(&parse(&file));
        counted += functions.found.len();
        for (name, line, lines) in functions.found {
            if lines > FUNCTION_LINES_MAX {
                too_long.push(format!(
                    "{}:{line}: `{name}` is {lines} lines",
                    file.display()
                ));
            }
        }
    }
    assert!(counted > 300, "only {counted} functions were counted");
    assert!(
        too_long.is_empty(),
        "functions longer than {FUNCTION_LINES_MAX} lines (split them where it reads better):\n{}",
        too_long.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// File headers

#[test]
fn every_file_says_what_it_is_for() {
    let root = root();
    let workspace = root.parent().expect("the workspace").to_path_buf();
    let mut missing = Vec::new();
    for dir in [
        root.join("src"),
        root.join("core/src"),
        root.join("tests"),
        workspace.join("durable-store/src"),
        workspace.join("durable-store/types/src"),
        workspace.join("durable-macros/src"),
    ] {
        for file in rust_files(&dir) {
            let text = std::fs::read_to_string(&file).expect("a readable file");
            let first = text.lines().find(|line| !line.trim().is_empty());
            if !first.is_some_and(|line| line.starts_with("//!")) {
                missing.push(file.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` header:\n{}",
        missing.join("\n")
    );
}
