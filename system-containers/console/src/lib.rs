//! Brig's console container: the accounts cloud-config asks for, ssh host
//! keys kept on a volume, then OpenSSH's sshd and a getty on each console.
//! Pure logic (rendering accounts, choosing gettys) is apart from the
//! setup that writes files and runs programs.

pub mod accounts;
pub mod gettys;
pub mod setup;
pub mod steps;
