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
//!   the others share one fewer, and at the end it uses both cores;
//! - a light test, whose guests leave most of a core idle (the rollback
//!   test waits out health timeouts and reboots: a quarter of a core over
//!   ten minutes), takes the one light slot beside the cores' and a test
//!   thread of its own, so the cores' slots go to tests that use them.
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
    pub share: Share,
}

/// What a test's guests take of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// A core's slot.
    Core,
    /// The light slot (`guest::Slot`).
    Light,
    /// Every core's slot (`guest::whole_machine`).
    WholeMachine,
}

/// `test!(module::function, seconds)`, or with `whole_machine` or `light`
/// after the seconds for a test that takes every slot or the light one.
#[macro_export]
macro_rules! test {
    ($f:path, $seconds:expr) => {
        $crate::harness::Test {
            name: stringify!($f),
            run: $f,
            seconds: $seconds,
            share: $crate::harness::Share::Core,
        }
    };
    ($f:path, $seconds:expr, whole_machine) => {
        $crate::harness::Test {
            name: stringify!($f),
            run: $f,
            seconds: $seconds,
            share: $crate::harness::Share::WholeMachine,
        }
    };
    ($f:path, $seconds:expr, light) => {
        $crate::harness::Test {
            name: stringify!($f),
            run: $f,
            seconds: $seconds,
            share: $crate::harness::Share::Light,
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
        let last = |t: &Test| t.share == Share::WholeMachine;
        (last(a).cmp(&last(b)))
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
    // Asked for one test or one guest at a time: a light test is one too.
    if threads == 1 || crate::guest::slots() == 1 {
        for test in &mut tests {
            if test.share == Share::Light {
                test.share = Share::Core;
            }
        }
    }
    let started = Instant::now();
    let mut pending: VecDeque<Test> = tests.into();
    let (done, finished) = mpsc::channel::<(&'static str, Share, bool, Duration)>();
    // Tests on the threads' budget, and whether the light one runs (on a
    // thread of its own).
    let mut running = 0;
    let mut light_running = false;
    let mut results = Vec::new();
    loop {
        while let Some(next) = pending.iter().position(|t| match t.share {
            Share::Light => !light_running,
            _ => running < threads,
        }) {
            let test = pending.remove(next).expect("a pending test");
            match test.share {
                Share::Light => light_running = true,
                _ => running += 1,
            }
            println!(
                "test {} ... started at {:.0} s",
                test.name,
                started.elapsed().as_secs_f64()
            );
            let done = done.clone();
            std::thread::Builder::new()
                .name(test.name.to_string())
                .spawn(move || {
                    if test.share == Share::Light {
                        crate::guest::light_test();
                    }
                    let began = Instant::now();
                    let passed = std::panic::catch_unwind(test.run).is_ok();
                    let _ = done.send((test.name, test.share, passed, began.elapsed()));
                })
                .expect("starting a test thread");
        }
        if running == 0 && !light_running {
            break;
        }
        let (name, share, passed, took) = finished.recv().expect("a test thread ends by sending");
        match share {
            Share::Light => light_running = false,
            _ => running -= 1,
        }
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
            share: Share::Core,
        },
        Test {
            name: "a",
            run: nothing,
            seconds: 10,
            share: Share::Core,
        },
        Test {
            name: "long",
            run: nothing,
            seconds: 300,
            share: Share::Core,
        },
        Test {
            name: "swarm",
            run: nothing,
            seconds: 500,
            share: Share::WholeMachine,
        },
        Test {
            name: "short",
            run: nothing,
            seconds: 1,
            share: Share::Core,
        },
        Test {
            name: "waits",
            run: nothing,
            seconds: 200,
            share: Share::Light,
        },
    ];
    order(&mut tests);
    let names: Vec<&str> = tests.iter().map(|t| t.name).collect();
    assert_eq!(names, ["long", "waits", "a", "b", "short", "swarm"]);
}
