//! The end-to-end tests' scheduler (the test binary's `main`: `harness =
//! false`). libtest runs tests in name order on a fixed number of threads;
//! here nearly all the time is QEMU under TCG and image builds, so the
//! order is what decides how long a run takes:
//!
//! - the longest tests start first (each test's time as measured here),
//!   so that no long one is left running alone at the end;
//! - a test is a thread, and one more runs than there are cores: while two
//!   tests have their guests running, a third builds its image;
//! - guests take slots (`guest::Slot`), one a core: a test that boots a
//!   guest waits for a free one and keeps it to its end, so there are
//!   never more guests than cores;
//! - a test that runs a guest on every core (the Swarm's three) starts
//!   last: waiting for every slot, it would hold a test thread idle while
//!   the others share one fewer, and at the end it uses both cores.
//!
//! The command line is libtest's, as far as cargo and people use it:
//! `FILTER…` (substrings of test names), `--exact`, `--skip FILTER`,
//! `--list`, `--test-threads N`, `--ignored` (none is, so it selects
//! none); libtest's other flags are accepted and ignored. Each test's output is not captured: what it prints is in the
//! log as it happens, and a panic names its test (the thread's name).

use std::collections::VecDeque;
use std::io::Write;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One test: its name (module::function), the function, and how long it
/// took on a 2-core machine under TCG, which orders the run.
pub struct Test {
    pub name: &'static str,
    pub run: fn(),
    pub seconds: u32,
    /// It takes every guest slot (`guest::whole_machine`).
    pub whole_machine: bool,
}

/// `test!(module::function, seconds)`, or with `whole_machine` after the
/// seconds for a test that takes every slot.
#[macro_export]
macro_rules! test {
    ($f:path, $seconds:expr) => {
        $crate::harness::Test {
            name: stringify!($f),
            run: $f,
            seconds: $seconds,
            whole_machine: false,
        }
    };
    ($f:path, $seconds:expr, whole_machine) => {
        $crate::harness::Test {
            name: stringify!($f),
            run: $f,
            seconds: $seconds,
            whole_machine: true,
        }
    };
}

/// What the command line asks for.
#[derive(Debug, Default, PartialEq)]
struct Arguments {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    /// `--ignored`: only the ignored tests, and none is.
    ignored_only: bool,
    threads: Option<usize>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Arguments, String> {
    let mut parsed = Arguments::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--exact" => parsed.exact = true,
            "--list" => parsed.list = true,
            "--ignored" => parsed.ignored_only = true,
            "--skip" => parsed.skip.push(value("--skip")?),
            "--test-threads" => {
                let n = value("--test-threads")?;
                parsed.threads = Some(n.parse().map_err(|_| format!("--test-threads {n}"))?);
            }
            other if other.starts_with("--test-threads=") => {
                let n = &other["--test-threads=".len()..];
                parsed.threads = Some(n.parse().map_err(|_| format!("--test-threads {n}"))?);
            }
            // libtest's output and selection flags: nothing to do here.
            "--nocapture" | "--show-output" | "--quiet" | "-q" | "--include-ignored"
            | "--color=never" | "--color=always" | "--color=auto" => {}
            "--format" | "--color" | "--logfile" => {
                value(&arg)?;
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            filter => parsed.filters.push(filter.to_string()),
        }
    }
    Ok(parsed)
}

impl Arguments {
    fn selects(&self, name: &str) -> bool {
        let matches = |filter: &String| {
            if self.exact {
                name == filter
            } else {
                name.contains(filter.as_str())
            }
        };
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skip.iter().any(|s| name.contains(s.as_str()))
    }
}

/// The order to start `tests` in: the longest first, names breaking ties;
/// those that take the whole machine after all the others.
fn order(tests: &mut [Test]) {
    tests.sort_by(|a, b| {
        (a.whole_machine.cmp(&b.whole_machine))
            .then(b.seconds.cmp(&a.seconds))
            .then(a.name.cmp(b.name))
    });
}

/// Runs the selected tests; the exit code says whether all passed.
pub fn main(mut tests: Vec<Test>) -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("e2e: {e}");
            return ExitCode::from(2);
        }
    };
    let everything = tests.len();
    tests.retain(|t| args.selects(t.name));
    let filtered_out = everything - tests.len();
    order(&mut tests);
    if args.list {
        for test in &tests {
            println!("{}: test", test.name);
        }
        return ExitCode::SUCCESS;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = args.threads.unwrap_or(cores + 1).max(1);
    println!(
        "\nrunning {} tests, {threads} at a time, at most {} guests at once",
        tests.len(),
        crate::guest::slots()
    );
    let started = Instant::now();
    let mut pending: VecDeque<Test> = tests.into();
    let (done, finished) = mpsc::channel::<(&'static str, bool, Duration)>();
    let mut running = 0;
    let mut results = Vec::new();
    loop {
        while running < threads {
            let Some(test) = pending.pop_front() else {
                break;
            };
            running += 1;
            println!(
                "test {} ... started at {:.0} s",
                test.name,
                started.elapsed().as_secs_f64()
            );
            let done = done.clone();
            std::thread::Builder::new()
                .name(test.name.to_string())
                .spawn(move || {
                    let began = Instant::now();
                    let passed = std::panic::catch_unwind(test.run).is_ok();
                    let _ = done.send((test.name, passed, began.elapsed()));
                })
                .expect("starting a test thread");
        }
        if running == 0 {
            break;
        }
        let (name, passed, took) = finished.recv().expect("a test thread ends by sending");
        running -= 1;
        println!(
            "test {name} ... {} ({:.0} s, {:.0} CPU-s; at {:.0} s)",
            if passed { "ok" } else { "FAILED" },
            took.as_secs_f64(),
            crate::cpu::spent(name),
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        results.push((name, passed, took));
    }
    results.sort_by_key(|r| std::cmp::Reverse(r.2));
    println!("\ntimes (longest first), and the CPU time of each test's builds and guests:");
    let mut total = 0.0;
    for (name, passed, took) in &results {
        let mark = if *passed { "" } else { "  FAILED" };
        let cpu = crate::cpu::spent(name);
        total += cpu;
        println!(
            "{:>6.0} s {cpu:>6.0} CPU-s  {name}{mark}",
            took.as_secs_f64()
        );
    }
    println!("{total:>15.0} CPU-s in all");
    let failed: Vec<&str> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    // libtest's closing line, word for word, so whatever reads cargo
    // test's summaries reads this one too.
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s",
        if failed.is_empty() { "ok" } else { "FAILED" },
        results.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}

/// The scheduler's own checks, run as the first test of the binary.
pub fn the_command_line_is_libtests_and_the_longest_tests_go_first() {
    let args = |text: &str| parse(text.split_whitespace().map(String::from));
    let parsed = args("console:: --exact --skip aarch64 --test-threads 3 --nocapture").unwrap();
    assert_eq!(
        parsed,
        Arguments {
            filters: vec!["console::".into()],
            skip: vec!["aarch64".into()],
            exact: true,
            list: false,
            ignored_only: false,
            threads: Some(3),
        }
    );
    assert!(!parsed.selects("console::qemu_x86_64_console_over_ssh"));
    let parsed = args("console:: --skip aarch64").unwrap();
    assert!(parsed.selects("console::qemu_x86_64_console_over_ssh"));
    assert!(!parsed.selects("console::qemu_aarch64_console_over_ssh"));
    assert!(!parsed.selects("state::keeps"));
    assert!(args("").unwrap().selects("anything"));
    assert!(!args("--ignored").unwrap().selects("anything"));
    assert!(args("--include-ignored").unwrap().selects("anything"));
    assert_eq!(args("--test-threads=4").unwrap().threads, Some(4));
    assert!(args("--frobnicate").is_err());
    assert!(args("--skip").is_err());

    fn nothing() {}
    let mut tests = vec![
        Test {
            name: "b",
            run: nothing,
            seconds: 10,
            whole_machine: false,
        },
        Test {
            name: "a",
            run: nothing,
            seconds: 10,
            whole_machine: false,
        },
        Test {
            name: "long",
            run: nothing,
            seconds: 300,
            whole_machine: false,
        },
        Test {
            name: "swarm",
            run: nothing,
            seconds: 500,
            whole_machine: true,
        },
        Test {
            name: "short",
            run: nothing,
            seconds: 1,
            whole_machine: false,
        },
    ];
    order(&mut tests);
    let names: Vec<&str> = tests.iter().map(|t| t.name).collect();
    assert_eq!(names, ["long", "a", "b", "short", "swarm"]);
}
