//! brig-wifi: runs wpa_supplicant for each `wifis:` entry of the network
//! config, once its interface exists (the driver has loaded the chip's
//! firmware), again if it ends. The network container addresses the link
//! once it has associated (it is then up with a carrier).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use brig_wifi::{plan, Radio, RUN_DIR};

fn say(line: &str) {
    println!("wifi: {line}");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let config = match args.as_slice() {
        [_, flag, path] if flag == "--config" => path.clone(),
        _ => {
            eprintln!("usage: brig-wifi --config NETWORK_CONFIG");
            return ExitCode::from(2);
        }
    };
    let text = match std::fs::read_to_string(&config) {
        Ok(text) => text,
        Err(e) => {
            say(&format!(
                "no network config ({config}: {e}): no wifis to join"
            ));
            return ExitCode::SUCCESS;
        }
    };
    let (radios, problems) = plan(&text, Path::new(RUN_DIR));
    for problem in &problems {
        say(&format!("error: {problem}"));
    }
    if radios.is_empty() {
        say("no wifis: with access points in the network config: nothing to do");
        return ExitCode::SUCCESS;
    }
    let mut threads = Vec::new();
    for radio in radios {
        if let Err(e) = write_config(&radio) {
            say(&format!(
                "error: writing {}: {e}",
                radio.config_path.display()
            ));
            return ExitCode::FAILURE;
        }
        threads.push(std::thread::spawn(move || supervise(&radio)));
    }
    for thread in threads {
        let _ = thread.join();
    }
    ExitCode::FAILURE
}

/// The config holds passphrases: readable by root only.
fn write_config(radio: &Radio) -> std::io::Result<()> {
    std::fs::create_dir_all(RUN_DIR)?;
    std::fs::write(&radio.config_path, &radio.config)?;
    std::fs::set_permissions(&radio.config_path, std::fs::Permissions::from_mode(0o600))
}

/// Waits for the interface, runs wpa_supplicant on it, and again 5 s after
/// it ends.
fn supervise(radio: &Radio) {
    let interface = Path::new("/sys/class/net").join(&radio.interface);
    let mut said_waiting = false;
    loop {
        if !interface.exists() {
            if !said_waiting {
                say(&format!(
                    "waiting for {} (no Wi-Fi chip, or its driver has no firmware yet)",
                    radio.interface
                ));
                said_waiting = true;
            }
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        said_waiting = false;
        say(&format!("{}: starting wpa_supplicant", radio.interface));
        match Command::new(&radio.command[0])
            .args(&radio.command[1..])
            .status()
        {
            Ok(status) => say(&format!(
                "{}: wpa_supplicant ended ({status}); again in 5 s",
                radio.interface
            )),
            Err(e) => say(&format!(
                "error: {}: starting wpa_supplicant: {e}; again in 5 s",
                radio.interface
            )),
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}
