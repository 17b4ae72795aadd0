//! Which `--token` and `--name` belong to which `--connect` of a capture of several
//! daemons: each belongs to the `--connect` before it on the command line, so that
//! `--connect tcp:A --token T --name left --connect unix:B` reads as it is written. A
//! `--token` before every `--connect` (or `$PCAPCAST_TOKEN`) serves every `tcp:`
//! endpoint that has none of its own.

use clap::parser::ValueSource;
use clap::ArgMatches;

use crate::client::Ask;
use crate::merged::Daemon;
use crate::target::{Endpoint, Target};

/// A value of an option and where it stood among the arguments (`None`: from the
/// environment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given<T> {
    /// The value.
    pub value: T,
    /// Its index among the arguments.
    pub at: Option<usize>,
}

/// The values of option `id` with their places, as clap parsed them.
pub fn given<T: Clone>(matches: Option<&ArgMatches>, id: &str, values: &[T]) -> Vec<Given<T>> {
    let from_env = matches.and_then(|m| m.value_source(id)) == Some(ValueSource::EnvVariable);
    let places: Vec<usize> = matches
        .and_then(|m| m.indices_of(id))
        .map(Iterator::collect)
        .unwrap_or_default();
    values
        .iter()
        .enumerate()
        .map(|(i, value)| Given {
            value: value.clone(),
            at: places.get(i).copied().filter(|_| !from_env),
        })
        .collect()
}

/// The daemons of `connect`, each with its token and name.
///
/// # Errors
///
/// A `--name` before every `--connect`, two tokens or names for one `--connect`, a token
/// after a `unix:` one, two daemons with one name.
pub fn pair(
    connect: &[Given<Target>],
    tokens: &[Given<String>],
    names: &[Given<String>],
    query: &str,
) -> Result<Vec<Daemon>, String> {
    // The --connect an option belongs to: the last one before it.
    let owner = |at: Option<usize>| {
        at.and_then(|at| connect.iter().rposition(|c| c.at.is_some_and(|c| c < at)))
    };
    let mut default_token = None;
    let mut own_tokens = vec![None; connect.len()];
    for token in tokens {
        match owner(token.at) {
            None if default_token.is_none() => default_token = Some(token.value.clone()),
            None => {
                return Err("two --token before the first --connect: one there serves every tcp: endpoint; \
                     put the others after the --connect they belong to"
                    .into())
            }
            Some(i) if matches!(connect[i].value.endpoint, Endpoint::Unix(_)) => {
                return Err(format!(
                    "--token after --connect {}: a Unix socket takes no token (its file mode guards it)",
                    connect[i].value
                ))
            }
            Some(i) if own_tokens[i].is_some() => {
                return Err(format!("two --token for --connect {}", connect[i].value))
            }
            Some(i) => own_tokens[i] = Some(token.value.clone()),
        }
    }
    let mut own_names = vec![None; connect.len()];
    for name in names {
        match owner(name.at) {
            None => {
                return Err(format!(
                    "--name {:?} comes before any --connect: put it after the --connect it names",
                    name.value
                ))
            }
            Some(i) if own_names[i].is_some() => {
                return Err(format!("two --name for --connect {}", connect[i].value))
            }
            Some(i) => own_names[i] = Some(name.value.clone()),
        }
    }
    let mut daemons: Vec<Daemon> = Vec::new();
    for ((target, token), name) in connect.iter().zip(own_tokens).zip(own_names) {
        let target = target.value.clone();
        let name = name.unwrap_or_else(|| target.to_string());
        if name.is_empty() || daemons.iter().any(|d| d.name == name) {
            return Err(format!(
                "{name:?} would name two daemons (or none): give each its own --name"
            ));
        }
        let token = match target.endpoint {
            Endpoint::Tcp(_) => token.or_else(|| default_token.clone()),
            Endpoint::Unix(_) => None,
        };
        let ask = Ask {
            target,
            query: query.to_owned(),
            token,
        };
        daemons.push(Daemon { ask, name });
    }
    Ok(daemons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at<T>(value: T, at: usize) -> Given<T> {
        Given {
            value,
            at: Some(at),
        }
    }

    fn connects() -> Vec<Given<Target>> {
        vec![
            at("unix:/run/a.sock".parse().unwrap(), 2),
            at("tcp:10.0.0.2:80".parse().unwrap(), 6),
            at("tcp:10.0.0.3:80".parse().unwrap(), 10),
        ]
    }

    fn summary(daemons: &[Daemon]) -> Vec<(String, Option<String>)> {
        daemons
            .iter()
            .map(|d| (d.name.clone(), d.ask.token.clone()))
            .collect()
    }

    #[test]
    fn options_belong_to_the_connect_before_them() {
        let tokens = [at("T".to_owned(), 8), at("all".to_owned(), 0)];
        let names = [at("left".to_owned(), 4), at("right".to_owned(), 12)];
        let daemons = pair(&connects(), &tokens, &names, "format=pcapng").unwrap();
        assert_eq!(
            summary(&daemons),
            [
                ("left".to_owned(), None),
                ("tcp:10.0.0.2:80".to_owned(), Some("T".to_owned())),
                ("right".to_owned(), Some("all".to_owned())),
            ]
        );
        assert!(daemons.iter().all(|d| d.ask.query == "format=pcapng"));
    }

    #[test]
    fn a_token_from_the_environment_serves_every_tcp_endpoint() {
        let env = [Given {
            value: "E".to_owned(),
            at: None,
        }];
        let daemons = pair(&connects(), &env, &[], "").unwrap();
        let tokens: Vec<Option<String>> = daemons.iter().map(|d| d.ask.token.clone()).collect();
        assert_eq!(tokens, [None, Some("E".to_owned()), Some("E".to_owned())]);
    }

    #[test]
    fn what_cannot_be_paired_is_refused() {
        let c = connects();
        let s = |v: &str, i| at(v.to_owned(), i);
        let refused = |tokens: &[Given<String>], names: &[Given<String>]| {
            pair(&c, tokens, names, "").unwrap_err()
        };
        assert!(refused(&[s("x", 3)], &[]).contains("Unix socket takes no token"));
        assert!(refused(&[s("x", 7), s("y", 8)], &[]).contains("two --token for"));
        assert!(refused(&[s("x", 0), s("y", 1)], &[]).contains("two --token before"));
        assert!(refused(&[], &[s("n", 1)]).contains("before any --connect"));
        assert!(refused(&[], &[s("n", 3), s("m", 4)]).contains("two --name for"));
        assert!(refused(&[], &[s("n", 3), s("n", 7)]).contains("would name two daemons"));
        assert!(refused(&[], &[s("", 3)]).contains("or none"));
        // The same endpoint twice, unnamed, would give two daemons one name.
        let twice = [c[1].clone(), at(c[1].value.clone(), 9)];
        assert!(pair(&twice, &[], &[], "")
            .unwrap_err()
            .contains("would name two"));
    }
}
