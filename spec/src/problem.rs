//! One problem in a document someone wrote (cloud-config, network config,
//! a service spec, a console account): the key path it concerns and what
//! is wrong. Every parser here reports these; whoever says them names the
//! document (`cloud-config: …`, `network config: …`, a spec's file), so
//! PID 1, the containers, `brig` and `brigctl` say them alike.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `ethernets.eth0.addresses`, `users[1].name`; empty for the
    /// document as a whole.
    pub key: String,
    /// What is wrong, for a person.
    pub problem: String,
}

impl Problem {
    pub fn new(key: String, problem: String) -> Problem {
        Problem { key, problem }
    }

    /// The same problem seen from `parent`, the key of the part it was
    /// found in: `name` under `users[1]` is `users[1].name`, `[0]` under
    /// `mounts` is `mounts[0]`.
    pub fn under(self, parent: &str) -> Problem {
        let key = match self.key.as_str() {
            "" => parent.to_string(),
            sub if sub.starts_with('[') || parent.is_empty() => format!("{parent}{sub}"),
            sub => format!("{parent}.{sub}"),
        };
        Problem { key, ..self }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "`{}`: {}", self.key, self.problem)
        }
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_says_its_key_and_keeps_its_place_under_a_parent() {
        let p = Problem::new("name".into(), "not a valid user name".into());
        assert_eq!(p.to_string(), "`name`: not a valid user name");
        assert_eq!(p.clone().under("users[1]").key, "users[1].name");
        assert_eq!(
            Problem::new("[0]".into(), "x".into()).under("mounts").key,
            "mounts[0]"
        );
        assert_eq!(
            Problem::new("".into(), "x".into()).under("mounts").key,
            "mounts"
        );
        assert_eq!(Problem::new("a".into(), "x".into()).under("").key, "a");
        assert_eq!(Problem::new("".into(), "empty".into()).to_string(), "empty");
    }
}
