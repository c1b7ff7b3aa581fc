//! The control socket's command path: tokenizing a line and parsing a command.
#![no_main]

use diskd::protocol::SessionCommand;
use diskd::protocol::frame::{quote, tokenize};
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
            // A parsed request written back as a line parses to a request that is written
            // back the same (`list --host a` and `list a` are one request, one line).
            if let Ok(SessionCommand::Request(r)) = SessionCommand::parse(words) {
                let line = r.to_line();
                let again = tokenize(&line).map(SessionCommand::parse);
                match &again {
                    Ok(Ok(SessionCommand::Request(a))) => assert_eq!(a.to_line(), line),
                    other => panic!("{r:?} -> {line:?} -> {other:?}"),
                }
            }
        }
    }
});
