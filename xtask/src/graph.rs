//! The allowed arrows between the workspace crates, checked over a plain description of
//! the crate graph so the rule itself is unit-testable (`check_graph`), and the adapter
//! that builds that description from `cargo metadata` (`members_from_metadata`).
//!
//! The policy is the crate table of the design doc ("Crates and the allowed arrows"):
//!
//! | crate | may depend on (normal and build dependencies) |
//! |---|---|
//! | core-types | no workspace crate; externally only serde, serde_json, thiserror, async-trait, jiff, utoipa (optional, feature `openapi`) |
//! | queue, store, dispatcher | core-types |
//! | scheduler | core-types, queue, store (never dispatcher: it talks to the `Dispatch` port) |
//! | http-api | core-types, queue, store, scheduler, auth (never dispatcher: it never talks to runtimes) |
//! | auth | core-types (tokens and credentials: no routes, no engine) |
//! | http-server | core-types (it serves any tower service: never the routes, the engine or the stores) |
//! | provider-process | core-types, dispatcher (it reaches its replicas with the pool dispatcher; never the engine or the stores) |
//! | control-plane | anything (the binary is where concrete types meet) |
//! | cli | core-types only (the `nanofaas` client talks HTTP to the API: never the engine, the routes or the stores) |
//! | tests | anything |
//! | xtask | no workspace crate |
//!
//! Dev-dependencies follow the same table, except that a dev-dependency on `core-types`
//! is always fine, so is one on the crate itself (how its integration tests turn on its
//! own `testing` feature: no new arrow), and external dev-dependencies are not
//! restricted.

use std::collections::BTreeSet;
use std::fmt;

use cargo_metadata::{DependencyKind, Metadata};

/// The kind of a dependency edge, as declared in a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum DepKind {
    Normal,
    Build,
    Dev,
}

impl fmt::Display for DepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DepKind::Normal => "dependency",
            DepKind::Build => "build-dependency",
            DepKind::Dev => "dev-dependency",
        })
    }
}

/// One declared dependency of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dep {
    /// The package name (not the `rename`d alias).
    pub(crate) name: String,
    pub(crate) kind: DepKind,
    /// Whether the dependency is another workspace member.
    pub(crate) internal: bool,
}

/// A workspace member and its declared dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) deps: Vec<Dep>,
}

impl Member {
    #[cfg(test)]
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            deps: Vec::new(),
        }
    }

    /// Adds a dependency on another workspace member.
    #[cfg(test)]
    pub(crate) fn internal(mut self, name: &str, kind: DepKind) -> Self {
        self.deps.push(Dep {
            name: name.to_owned(),
            kind,
            internal: true,
        });
        self
    }

    /// Adds a dependency on an external crate.
    #[cfg(test)]
    pub(crate) fn external(mut self, name: &str, kind: DepKind) -> Self {
        self.deps.push(Dep {
            name: name.to_owned(),
            kind,
            internal: false,
        });
        self
    }
}

/// Which workspace crates a member may depend on.
#[derive(Debug, Clone, Copy)]
enum Allowed {
    Any,
    Only(&'static [&'static str]),
}

impl Allowed {
    fn permits(self, name: &str) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Only(names) => names.contains(&name),
        }
    }
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Any => f.write_str("any workspace crate"),
            Allowed::Only([]) => f.write_str("no workspace crate"),
            Allowed::Only(names) => f.write_str(&names.join(", ")),
        }
    }
}

#[derive(Debug)]
struct Rule {
    krate: &'static str,
    internal: Allowed,
    /// `Some(list)`: the only external crates allowed as normal/build dependencies.
    external: Option<&'static [&'static str]>,
}

/// The crate every member may always dev-depend on.
const ALWAYS_OK_DEV_DEP: &str = "core-types";

const POLICY: &[Rule] = &[
    Rule {
        krate: "core-types",
        internal: Allowed::Only(&[]),
        // utoipa: `ToSchema` for the wire types, behind the optional `openapi` feature that
        // only http-api enables, so the API's OpenAPI document is generated from the real
        // types; no other user of core-types builds it.
        external: Some(&[
            "serde",
            "serde_json",
            "thiserror",
            "async-trait",
            "jiff",
            "utoipa",
        ]),
    },
    Rule {
        krate: "queue",
        internal: Allowed::Only(&["core-types"]),
        external: None,
    },
    Rule {
        krate: "store",
        internal: Allowed::Only(&["core-types"]),
        external: None,
    },
    Rule {
        krate: "dispatcher",
        internal: Allowed::Only(&["core-types"]),
        external: None,
    },
    Rule {
        krate: "scheduler",
        internal: Allowed::Only(&["core-types", "queue", "store"]),
        external: None,
    },
    Rule {
        krate: "http-api",
        internal: Allowed::Only(&["core-types", "queue", "store", "scheduler", "auth"]),
        external: None,
    },
    Rule {
        krate: "auth",
        internal: Allowed::Only(&["core-types"]),
        external: None,
    },
    Rule {
        krate: "http-server",
        internal: Allowed::Only(&["core-types"]),
        external: None,
    },
    Rule {
        krate: "provider-process",
        internal: Allowed::Only(&["core-types", "dispatcher"]),
        external: None,
    },
    Rule {
        krate: "control-plane",
        internal: Allowed::Any,
        external: None,
    },
    Rule {
        krate: "cli",
        internal: Allowed::Only(&["core-types"]),
        external: None,
    },
    Rule {
        krate: "xtask",
        internal: Allowed::Only(&[]),
        external: None,
    },
    Rule {
        krate: "tests",
        internal: Allowed::Any,
        external: None,
    },
];

/// A broken rule of the crate graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Violation {
    /// `from` depends on workspace crate `to` and the table has no such arrow.
    ForbiddenArrow {
        from: String,
        to: String,
        kind: DepKind,
    },
    /// `from` depends on an external crate outside its allow-list.
    ForbiddenExternal {
        from: String,
        to: String,
        kind: DepKind,
    },
    /// A workspace member the table does not know: add it to the table (and the design doc).
    UnknownMember { name: String },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::ForbiddenArrow { from, to, kind } => {
                let allowed = rule_for(from).map_or(Allowed::Only(&[]), |rule| rule.internal);
                write!(
                    f,
                    "`{from}` has a {kind} on `{to}`, which is not an allowed arrow; \
                     `{from}` may depend on: {allowed}"
                )?;
                if *kind == DepKind::Dev {
                    write!(f, " (and `{ALWAYS_OK_DEV_DEP}` as a dev-dependency)")?;
                }
                Ok(())
            }
            Violation::ForbiddenExternal { from, to, kind } => {
                let allowed = rule_for(from)
                    .and_then(|rule| rule.external)
                    .unwrap_or(&[])
                    .join(", ");
                write!(
                    f,
                    "`{from}` has a {kind} on external crate `{to}`; \
                     `{from}` may only use: {allowed}"
                )
            }
            Violation::UnknownMember { name } => write!(
                f,
                "workspace member `{name}` is not in the crate table of xtask/src/graph.rs \
                 (and the design doc): decide what it may depend on and add it"
            ),
        }
    }
}

fn rule_for(name: &str) -> Option<&'static Rule> {
    POLICY.iter().find(|rule| rule.krate == name)
}

/// Every violation of the crate table in `members`, sorted and without duplicates (the
/// same dependency can be declared several times, e.g. per target platform).
pub(crate) fn check_graph(members: &[Member]) -> Vec<Violation> {
    let mut violations = BTreeSet::new();
    for member in members {
        let Some(rule) = rule_for(&member.name) else {
            violations.insert(Violation::UnknownMember {
                name: member.name.clone(),
            });
            continue;
        };
        for dep in &member.deps {
            if dep.internal {
                let allowed = rule.internal.permits(&dep.name)
                    || (dep.kind == DepKind::Dev
                        && (dep.name == ALWAYS_OK_DEV_DEP || dep.name == member.name));
                if !allowed {
                    violations.insert(Violation::ForbiddenArrow {
                        from: member.name.clone(),
                        to: dep.name.clone(),
                        kind: dep.kind,
                    });
                }
            } else if let Some(external) = rule.external
                && dep.kind != DepKind::Dev
                && !external.contains(&dep.name.as_str())
            {
                violations.insert(Violation::ForbiddenExternal {
                    from: member.name.clone(),
                    to: dep.name.clone(),
                    kind: dep.kind,
                });
            }
        }
    }
    violations.into_iter().collect()
}

/// The workspace members of `metadata` with their declared dependencies.
pub(crate) fn members_from_metadata(metadata: &Metadata) -> Vec<Member> {
    let packages = metadata.workspace_packages();
    let member_names: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    packages
        .iter()
        .map(|package| Member {
            name: package.name.to_string(),
            deps: package
                .dependencies
                .iter()
                .map(|dep| Dep {
                    name: dep.name.clone(),
                    kind: match dep.kind {
                        DependencyKind::Development => DepKind::Dev,
                        DependencyKind::Build => DepKind::Build,
                        // `Normal`, and anything a future cargo adds: be strict.
                        _ => DepKind::Normal,
                    },
                    internal: dep.path.is_some() && member_names.contains(dep.name.as_str()),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::DepKind::{Build, Dev, Normal};
    use super::*;

    /// The graph the design doc describes, with every allowed arrow present.
    fn allowed_graph() -> Vec<Member> {
        vec![
            Member::new("core-types")
                .external("serde", Normal)
                .external("serde_json", Normal)
                .external("thiserror", Normal)
                .external("async-trait", Normal)
                .external("jiff", Normal)
                .external("utoipa", Normal)
                .external("insta", Dev)
                .external("tokio", Dev),
            Member::new("queue")
                .internal("core-types", Normal)
                .external("tokio", Normal),
            Member::new("store")
                .internal("core-types", Normal)
                .external("dashmap", Normal),
            Member::new("dispatcher")
                .internal("core-types", Normal)
                .external("reqwest", Normal),
            Member::new("scheduler")
                .internal("core-types", Normal)
                .internal("queue", Normal)
                .internal("store", Normal)
                .external("tokio", Normal)
                .external("insta", Dev),
            Member::new("http-api")
                .internal("core-types", Normal)
                .internal("queue", Normal)
                .internal("store", Normal)
                .internal("scheduler", Normal)
                .external("axum", Normal),
            Member::new("provider-process")
                .internal("core-types", Normal)
                .internal("dispatcher", Normal)
                .external("rustix", Normal),
            Member::new("control-plane")
                .internal("core-types", Normal)
                .internal("provider-process", Normal)
                .internal("queue", Normal)
                .internal("store", Normal)
                .internal("dispatcher", Normal)
                .internal("scheduler", Normal)
                .internal("http-api", Normal),
            Member::new("cli")
                .internal("core-types", Normal)
                .external("reqwest", Normal)
                .external("clap", Normal),
            Member::new("xtask").external("cargo_metadata", Normal),
            Member::new("tests")
                .internal("core-types", Dev)
                .internal("queue", Dev)
                .internal("store", Dev)
                .internal("dispatcher", Dev)
                .internal("scheduler", Dev)
                .internal("http-api", Dev),
        ]
    }

    /// `allowed_graph()` with one more dependency on `from`.
    fn with_dep(from: &str, dep: Dep) -> Vec<Member> {
        let mut graph = allowed_graph();
        graph
            .iter_mut()
            .find(|member| member.name == from)
            .expect("member exists")
            .deps
            .push(dep);
        graph
    }

    fn internal(name: &str, kind: DepKind) -> Dep {
        Dep {
            name: name.to_owned(),
            kind,
            internal: true,
        }
    }

    fn external(name: &str, kind: DepKind) -> Dep {
        Dep {
            name: name.to_owned(),
            kind,
            internal: false,
        }
    }

    fn arrow(from: &str, to: &str, kind: DepKind) -> Violation {
        Violation::ForbiddenArrow {
            from: from.to_owned(),
            to: to.to_owned(),
            kind,
        }
    }

    #[test]
    fn the_designed_graph_passes() {
        assert_eq!(check_graph(&allowed_graph()), vec![]);
    }

    #[test]
    fn scheduler_must_not_depend_on_dispatcher() {
        let graph = with_dep("scheduler", internal("dispatcher", Normal));
        assert_eq!(
            check_graph(&graph),
            vec![arrow("scheduler", "dispatcher", Normal)]
        );
    }

    #[test]
    fn a_provider_must_not_know_the_engine() {
        let graph = with_dep("provider-process", internal("scheduler", Normal));
        assert_eq!(
            check_graph(&graph),
            vec![arrow("provider-process", "scheduler", Normal)]
        );
    }

    #[test]
    fn http_api_must_not_depend_on_dispatcher() {
        let graph = with_dep("http-api", internal("dispatcher", Normal));
        assert_eq!(
            check_graph(&graph),
            vec![arrow("http-api", "dispatcher", Normal)]
        );
    }

    #[test]
    fn the_cli_must_not_know_the_engine() {
        for engine in [
            "http-api",
            "scheduler",
            "store",
            "queue",
            "dispatcher",
            "auth",
        ] {
            let graph = with_dep("cli", internal(engine, Normal));
            assert_eq!(check_graph(&graph), vec![arrow("cli", engine, Normal)]);
        }
    }

    #[test]
    fn queue_must_not_depend_on_store() {
        let graph = with_dep("queue", internal("store", Normal));
        assert_eq!(check_graph(&graph), vec![arrow("queue", "store", Normal)]);
    }

    #[test]
    fn lower_crates_must_not_depend_upwards() {
        let graph = with_dep("store", internal("scheduler", Normal));
        assert_eq!(
            check_graph(&graph),
            vec![arrow("store", "scheduler", Normal)]
        );
        let graph = with_dep("core-types", internal("queue", Normal));
        assert_eq!(
            check_graph(&graph),
            vec![arrow("core-types", "queue", Normal)]
        );
    }

    #[test]
    fn core_types_must_not_use_tokio() {
        let graph = with_dep("core-types", external("tokio", Normal));
        assert_eq!(
            check_graph(&graph),
            vec![Violation::ForbiddenExternal {
                from: "core-types".to_owned(),
                to: "tokio".to_owned(),
                kind: Normal,
            }]
        );
    }

    #[test]
    fn build_dependencies_are_checked_like_normal_ones() {
        let graph = with_dep("scheduler", internal("dispatcher", Build));
        assert_eq!(
            check_graph(&graph),
            vec![arrow("scheduler", "dispatcher", Build)]
        );
        let graph = with_dep("core-types", external("cc", Build));
        assert_eq!(check_graph(&graph).len(), 1);
    }

    #[test]
    fn dev_dependencies_follow_the_table_except_core_types_and_the_crate_itself() {
        let graph = with_dep("scheduler", internal("dispatcher", Dev));
        assert_eq!(
            check_graph(&graph),
            vec![arrow("scheduler", "dispatcher", Dev)]
        );
        // Allowed as a normal dependency, so allowed as a dev-dependency too.
        let graph = with_dep("http-api", internal("scheduler", Dev));
        assert_eq!(check_graph(&graph), vec![]);
        // core-types is always fine as a dev-dependency, even for xtask.
        let graph = with_dep("xtask", internal("core-types", Dev));
        assert_eq!(check_graph(&graph), vec![]);
        // ...but not as a normal one.
        let graph = with_dep("xtask", internal("core-types", Normal));
        assert_eq!(
            check_graph(&graph),
            vec![arrow("xtask", "core-types", Normal)]
        );
        // A crate's own tests may turn on its features through a dev-dependency on it.
        let graph = with_dep("scheduler", internal("scheduler", Dev));
        assert_eq!(check_graph(&graph), vec![]);
        let graph = with_dep("scheduler", internal("scheduler", Normal));
        assert_eq!(
            check_graph(&graph),
            vec![arrow("scheduler", "scheduler", Normal)]
        );
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let mut graph = with_dep("scheduler", internal("dispatcher", Normal));
        graph.push(Member::new("newcomer"));
        for member in &mut graph {
            match member.name.as_str() {
                "queue" => member.deps.push(internal("store", Normal)),
                "core-types" => member.deps.push(external("tokio", Normal)),
                _ => {}
            }
        }
        let violations = check_graph(&graph);
        assert_eq!(violations.len(), 4, "{violations:#?}");
        assert!(violations.contains(&arrow("scheduler", "dispatcher", Normal)));
        assert!(violations.contains(&arrow("queue", "store", Normal)));
        assert!(violations.contains(&Violation::UnknownMember {
            name: "newcomer".to_owned()
        }));
    }

    #[test]
    fn a_dependency_declared_twice_is_reported_once() {
        let mut graph = with_dep("queue", internal("store", Normal));
        graph[1].deps.push(internal("store", Normal));
        assert_eq!(check_graph(&graph), vec![arrow("queue", "store", Normal)]);
    }

    #[test]
    fn messages_name_the_arrow_and_what_is_allowed() {
        let message = arrow("scheduler", "dispatcher", Normal).to_string();
        assert!(message.contains("`scheduler` has a dependency on `dispatcher`"));
        assert!(message.contains("core-types, queue, store"));
    }

    #[test]
    fn the_real_workspace_graph_passes() {
        let metadata = crate::util::workspace_metadata(&crate::util::repo_root())
            .expect("cargo metadata of this workspace");
        let members = members_from_metadata(&metadata);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        for expected in ["core-types", "scheduler", "xtask", "tests"] {
            assert!(names.contains(&expected), "{expected} missing in {names:?}");
        }
        let violations = check_graph(&members);
        assert!(
            violations.is_empty(),
            "crate graph violations:\n{}",
            violations
                .iter()
                .map(|v| format!("  - {v}\n"))
                .collect::<String>()
        );
    }
}
