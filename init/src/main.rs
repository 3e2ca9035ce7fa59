//! brig-init: Brig's PID 1. This file only dispatches on argv[0] (the
//! kernel also runs it as its module loader), installs the panic hook and
//! runs the event loop, catching a bug in one turn so PID 1 goes on
//! serving; the library has the rest, one folder a concern (lib.rs).

use std::panic::{self, AssertUnwindSafe};

use brig_init::boot::sequence::{boot, emergency, modules_dir};
use brig_init::event_loop::pause_after_panics;
use brig_init::host::console::say;
use brig_init::host::modprobe;
use brig_init::host::system::Linux;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.first().is_some_and(|a| a.ends_with("modprobe")) {
        // Run by the kernel as its module loader, not as init.
        std::process::exit(modprobe::main(&Linux, &modules_dir(), &args[1..]));
    }
    if std::process::id() != 1 {
        eprintln!("brig-init: this is Brig's PID 1 and only runs as the kernel's init");
        std::process::exit(1);
    }
    panic::set_hook(Box::new(|info| {
        say(&format!("internal error (a bug in brig-init): {info}"))
    }));
    let mut init = match panic::catch_unwind(boot) {
        Ok(Ok(init)) => init,
        Ok(Err(e)) => emergency(&e.to_string()),
        Err(_) => emergency("boot step crashed"),
    };
    let mut panics = 0;
    loop {
        if panic::catch_unwind(AssertUnwindSafe(|| init.turn())).is_ok() {
            panics = 0;
            continue;
        }
        panics += 1;
        say("recovered from an internal error; still serving");
        // A bug that strikes every turn must not spin the CPU.
        std::thread::sleep(pause_after_panics(panics));
    }
}
