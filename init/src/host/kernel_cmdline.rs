//! Kernel command line parsing.
//!
//! The kernel passes `/proc/cmdline` as one line of space-separated words;
//! a value may be double-quoted to hold spaces (`brig.motd="hello world"`).
//! Words after a lone `--` belong to init, which Brig does not use.

/// One `key` or `key=value` word.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Param {
    key: String,
    value: Option<String>,
}

/// The parsed command line, in order; later words win on lookup, as in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<Param>,
}

impl Cmdline {
    pub fn parse(line: &str) -> Cmdline {
        let mut params = Vec::new();
        for word in split_words(line) {
            if word == "--" {
                break;
            }
            let param = match word.split_once('=') {
                Some((key, value)) => Param {
                    key: key.to_string(),
                    value: Some(value.to_string()),
                },
                None => Param {
                    key: word,
                    value: None,
                },
            };
            params.push(param);
        }
        Cmdline { params }
    }

    /// The value of the last `key=value` word for `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|p| p.key == key)
            .and_then(|p| p.value.as_deref())
    }
}

/// Splits on unquoted whitespace and removes the quotes, like the kernel's
/// `next_arg`: a quote toggles quoting anywhere in a word.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        let c = Cmdline::parse("console=ttyS0 quiet brig.hostname=node1 ro\n");
        assert_eq!(c.value("console"), Some("ttyS0"));
        assert_eq!(c.value("brig.hostname"), Some("node1"));
        assert_eq!(c.value("quiet"), None);
        assert_eq!(c.params.len(), 4);
        assert_eq!(
            c.params[1],
            Param {
                key: "quiet".into(),
                value: None
            }
        );
    }

    #[test]
    fn quoted_values_keep_spaces() {
        let c = Cmdline::parse(r#"a=1 brig.motd="hello  world" "b=x y" c"#);
        assert_eq!(c.value("brig.motd"), Some("hello  world"));
        assert_eq!(c.value("b"), Some("x y"));
        assert_eq!(c.params.last().unwrap().key, "c");
    }

    #[test]
    fn last_value_wins_and_values_may_contain_equals() {
        let c = Cmdline::parse("console=tty0 console=ttyS0,115200 brig.config=YWJj==");
        assert_eq!(c.value("console"), Some("ttyS0,115200"));
        assert_eq!(c.value("brig.config"), Some("YWJj=="));
    }

    #[test]
    fn words_after_double_dash_are_ignored() {
        let c = Cmdline::parse("quiet -- single brig.hostname=x");
        assert_eq!(c.params.len(), 1);
        assert_eq!(c.value("brig.hostname"), None);
    }

    #[test]
    fn the_last_word_for_a_key_answers_even_without_a_value() {
        // `key` alone has no value; `key=` has an empty one.
        let c = Cmdline::parse("brig.hostname=a brig.hostname");
        assert_eq!(c.value("brig.hostname"), None);
        let c = Cmdline::parse("brig.hostname=a brig.hostname=");
        assert_eq!(c.value("brig.hostname"), Some(""));
    }

    #[test]
    fn empty_and_whitespace_only() {
        assert!(Cmdline::parse("").params.is_empty());
        assert!(Cmdline::parse("  \n\t ").params.is_empty());
    }
}
