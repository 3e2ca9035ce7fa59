//! The `brig:` section of cloud-config: Brig's own settings (services,
//! console, docker, logging, sysctl, modules).

use super::*;

/// Brig's own settings (`brig:`).
pub(super) fn brig_section(value: &Value, config: &mut CloudConfig, problems: &mut Vec<Problem>) {
    let Some(map) = value.as_object() else {
        problems.push(Problem {
            key: "brig".into(),
            problem: format!("expected a mapping, not {value}"),
        });
        return;
    };
    for (key, value) in map {
        let mut problem = |sub: &str, p: String| {
            problems.push(Problem {
                key: format!("brig.{key}{sub}"),
                problem: p,
            })
        };
        match key.as_str() {
            "console" => {
                let Some(console) = value.as_object() else {
                    problem("", format!("expected a mapping, not {value}"));
                    continue;
                };
                for (sub, v) in console {
                    match (sub.as_str(), v) {
                        ("autologin", Value::Bool(false)) => config.console.autologin = None,
                        ("autologin", Value::Bool(true)) => {
                            config.console.autologin = Some(console::DEFAULT_USER.into())
                        }
                        ("autologin", Value::String(name)) => {
                            config.console.autologin = Some(name.clone())
                        }
                        ("autologin", other) => problem(
                            ".autologin",
                            format!("expected true, false or a user name, not {other}"),
                        ),
                        (other, _) => problem(&format!(".{other}"), "unknown key, ignored".into()),
                    }
                }
            }
            "sysctl" => {
                let Some(settings) = value.as_object() else {
                    problem(
                        "",
                        format!("expected a mapping of names to values, not {value}"),
                    );
                    continue;
                };
                for (name, v) in settings {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => u8::from(*b).to_string(),
                        other => {
                            problem(
                                &format!(".{name}"),
                                format!("expected a value, not {other}"),
                            );
                            continue;
                        }
                    };
                    let valid_name = !name.is_empty()
                        && name.split(['.', '/']).all(|part| {
                            !part.is_empty()
                                && part != ".."
                                && part
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
                        });
                    if !valid_name {
                        problem(
                            &format!(".{name}"),
                            "not a sysctl name such as vm.swappiness".into(),
                        );
                    } else if text.contains('\n') {
                        problem(&format!(".{name}"), "a value is one line".into());
                    } else {
                        config.sysctl.push((name.clone(), text));
                    }
                }
            }
            "modules" => {
                let Some(names) = value.as_array() else {
                    problem("", format!("expected a list of module names, not {value}"));
                    continue;
                };
                for (i, name) in names.iter().enumerate() {
                    match name.as_str() {
                        Some(n)
                            if !n.is_empty()
                                && n.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)) =>
                        {
                            config.modules.push(n.to_string())
                        }
                        _ => problem(&format!("[{i}]"), format!("{name} is not a module name")),
                    }
                }
            }
            "docker" => {
                let (docker, found) = docker_config::parse(value);
                config.docker = Some(docker);
                problems.extend(found.into_iter().map(|p| sub_problem("brig.docker", p)));
            }
            "logging" => {
                let (logging, found) = log_config::parse(value);
                config.logging = Some(logging);
                problems.extend(found.into_iter().map(|p| sub_problem("brig.logging", p)));
            }
            "update" => {
                let (update, found) = update_config::parse(value);
                config.update = update;
                problems.extend(found.into_iter().map(|p| sub_problem("brig.update", p)));
            }
            "services" => {
                let Some(services) = value.as_object() else {
                    problem(
                        "",
                        format!("expected a mapping of service names to specs, not {value}"),
                    );
                    continue;
                };
                for (name, spec) in services {
                    match ServiceSpec::from_config(name, spec) {
                        Ok(spec) => config.services.push(spec),
                        Err(Problem {
                            key: sub,
                            problem: p,
                        }) => {
                            let sub = if sub.is_empty() {
                                String::new()
                            } else {
                                format!(".{sub}")
                            };
                            problem(&format!(".{name}{sub}"), format!("{p}; service not added"))
                        }
                    }
                }
            }
            _ => problem("", "unknown key, ignored".into()),
        }
    }
}
