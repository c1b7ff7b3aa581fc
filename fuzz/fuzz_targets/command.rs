//! The control socket's command path: tokenizing a line and parsing a command.
#![no_main]

use diskd::control::cmd::Command;
use diskd::control::proto::{quote, tokenize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(words) = tokenize(line) {
        // Quoting every word and tokenizing again gives the same words.
        let requoted: Vec<String> = words.iter().map(|w| quote(w)).collect();
        assert_eq!(tokenize(&requoted.join(" ")).as_ref(), Ok(&words));
        if !words.is_empty() {
            let _ = Command::parse(words);
        }
    }
});
