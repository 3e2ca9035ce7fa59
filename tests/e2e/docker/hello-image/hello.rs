//! The one program of the end-to-end tests' Docker image (a static binary
//! in a tar, `docker import`ed in the guest: no registry needed). Without
//! arguments it greets; with `serve` it holds 8 MiB and stays up, saying
//! so each time it starts, for the restart-policy and `docker stats` checks.

fn main() {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        let held = vec![1u8; 8 << 20];
        println!("serving, holding {} MiB", held.len() >> 20);
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            std::hint::black_box(&held);
        }
    }
    println!("hello from a container on brig");
}
