//! brig-config: reads a question from PID 1 on stdin (JSON: the config's
//! bytes), writes the answer on stdout (JSON: a plan, or a setting checked).
//! It holds the YAML parser and the cloud-config schema so that PID 1 does
//! not; PID 1 runs it unprivileged, with a deadline (`config::ask`).

use std::io::{Read, Write};
use std::panic::{self, AssertUnwindSafe};

use brig_init::config::ask::{answer, Answer, Question};

fn main() {
    // Not dumpable: a process of the same user cannot trace it or read
    // its memory (PID 1 trusts what it answers, within bounds).
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("brig-config: reading the question: {e}");
        std::process::exit(2);
    }
    let question: Question = match serde_json::from_slice(&input) {
        Ok(question) => question,
        Err(e) => {
            eprintln!("brig-config: not a question from PID 1: {e}");
            std::process::exit(2);
        }
    };
    // A bug in the config's code is reported to PID 1 as the reason.
    panic::set_hook(Box::new(|_| {}));
    let answer = panic::catch_unwind(AssertUnwindSafe(|| answer(question))).unwrap_or_else(|e| {
        let why = e
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Answer::Crashed(why)
    });
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut out, &answer)
        .map_err(std::io::Error::from)
        .and_then(|()| out.flush());
    if let Err(e) = written {
        eprintln!("brig-config: writing the answer: {e}");
        std::process::exit(2);
    }
}
