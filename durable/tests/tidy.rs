//! Keeps the deterministic core deterministic: nothing under `src/core/` may mention the
//! things that make code behave differently from one run to the next.

use std::path::Path;

/// Words that must not appear in the core, and what to use instead.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "tokio",
        "the core runs outside any async runtime; the shell performs I/O",
    ),
    ("std::fs", "the core does no I/O"),
    ("std::net", "the core does no I/O"),
    ("std::thread", "the core spawns nothing"),
    (
        "SystemTime",
        "time comes from the turn's OrchestratorStarted event",
    ),
    (
        "Instant",
        "time comes from the turn's OrchestratorStarted event",
    ),
    ("rand", "ids derive from the instance and a counter"),
    (
        "HashMap",
        "iteration order differs per process; use BTreeMap or Vec",
    ),
    (
        "HashSet",
        "iteration order differs per process; use BTreeSet or Vec",
    ),
];

#[test]
fn core_mentions_nothing_nondeterministic() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&core).expect("src/core exists") {
        let path = entry.expect("readable directory").path();
        let text = std::fs::read_to_string(&path).expect("readable file");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for (word, why) in FORBIDDEN {
                if contains_word(code, word) {
                    problems.push(format!(
                        "{}:{}: `{word}`: {why}",
                        path.display(),
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the core must stay deterministic:\n{}",
        problems.join("\n")
    );
}

/// Whether `word` occurs in `line` as a whole identifier (so `rand` does not match
/// `operand`).
fn contains_word(line: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

#[test]
fn word_matching_is_whole_words() {
    assert!(contains_word("use rand::Rng;", "rand"));
    assert!(!contains_word("let operand = 1;", "rand"));
    assert!(contains_word("x: HashMap<u8, u8>", "HashMap"));
}
