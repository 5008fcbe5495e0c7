//! `fn apply -f PATH...`: specs read from YAML or JSON files (a directory of them,
//! several YAML documents in one file), every one checked before anything is sent, then
//! each created, replaced when it differs from what the control plane has (the API has
//! no update: `DELETE` then `POST`), or left alone when it is the same.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use core_types::{ExecutionMode, FunctionSpec, FunctionView};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::Session;
use super::functions::function_path;
use crate::args::{ApplyArgs, Format};
use crate::error::{CliError, Exit, Result};
use crate::output;

/// One spec read from a file.
#[derive(Debug)]
struct Spec {
    /// Where it came from (`file` or `file#2` for the second YAML document).
    origin: String,
    /// The document as written.
    document: Value,
    /// It resolved, every default filled in.
    spec: FunctionSpec,
}

/// What `apply` did with one spec.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Applied {
    name: String,
    action: Action,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    changed: Vec<String>,
    function: FunctionView,
}

/// What was done with a spec (as `-o json|yaml` and the text lines name it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Created,
    Replaced,
    Unchanged,
}

/// Runs `fn apply`.
pub(crate) async fn run(session: &Session, args: &ApplyArgs) -> Result<Exit> {
    let specs = read_all(&args.files)?;
    let mut applied = Vec::new();
    for spec in specs {
        let done = apply_one(session, spec).await?;
        if session.format == Format::Text {
            match done.action {
                Action::Replaced => anstream::println!(
                    "{}: replaced (changed: {})",
                    done.name,
                    done.changed.join(", ")
                ),
                Action::Created => anstream::println!("{}: created", done.name),
                Action::Unchanged => anstream::println!("{}: unchanged", done.name),
            }
        }
        applied.push(done);
    }
    if session.format != Format::Text {
        output::print_data(session.format, &applied)?;
    }
    Ok(Exit::Success)
}

async fn apply_one(session: &Session, spec: Spec) -> Result<Applied> {
    let name = spec.spec.name.clone();
    let path = function_path(&name);
    let current = match session.api.get::<FunctionView>(&path).await {
        Ok(view) => Some(view),
        Err(error) if error.code() == Some("NOT_FOUND") => None,
        Err(error) => return Err(error),
    };
    let (action, changed) = match &current {
        None => (Action::Created, Vec::new()),
        Some(view) => {
            let changed = differences(&spec.spec, view)?;
            if changed.is_empty() {
                return Ok(Applied {
                    name: name.as_str().to_owned(),
                    action: Action::Unchanged,
                    changed,
                    function: view.clone(),
                });
            }
            session
                .api
                .send(session.api.request(Method::DELETE, &path))
                .await?;
            (Action::Replaced, changed)
        }
    };
    let view: FunctionView = session
        .api
        .send_json(Method::POST, "/v1/functions", &spec.document)
        .await
        .map_err(|error| {
            if action == Action::Replaced {
                error.with_hint(format!(
                    "{name} was removed to be replaced, and registering it again failed: \
                     it is not registered now ({})",
                    spec.origin
                ))
            } else {
                error
            }
        })?;
    Ok(Applied {
        name: name.as_str().to_owned(),
        action,
        changed,
        function: view,
    })
}

/// The top-level fields where `wanted` differs from what the control plane has (none:
/// unchanged). A `DEPLOYMENT` run by a provider has its endpoint set by the control
/// plane, which is no difference.
fn differences(wanted: &FunctionSpec, current: &FunctionView) -> Result<Vec<String>> {
    let mut have = (*current.spec).clone();
    if wanted.endpoint_url.is_none() && wanted.execution_mode == ExecutionMode::Deployment {
        have.endpoint_url = None;
    }
    let wanted = output::to_value(wanted)?;
    let have = output::to_value(&have)?;
    let (Some(wanted), Some(have)) = (wanted.as_object(), have.as_object()) else {
        return Ok(Vec::new());
    };
    let keys: BTreeSet<&String> = wanted.keys().chain(have.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|key| wanted.get(*key) != have.get(*key))
        .cloned()
        .collect())
}

/// Every spec of `paths`, each checked; nothing is returned unless all are valid and
/// no name comes twice.
fn read_all(paths: &[PathBuf]) -> Result<Vec<Spec>> {
    let mut files = Vec::new();
    for path in paths {
        files.extend(spec_files(path)?);
    }
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match read_file(file) {
            Ok(found) => specs.extend(found),
            Err(problem) => problems.push(problem),
        }
    }
    let mut names = BTreeSet::new();
    for spec in &specs {
        if !names.insert(spec.spec.name.as_str().to_owned()) {
            problems.push(format!(
                "{}: the function {} is in more than one spec",
                spec.origin, spec.spec.name
            ));
        }
    }
    if !problems.is_empty() {
        return Err(CliError::local(format!(
            "nothing applied:\n  {}",
            problems.join("\n  ")
        )));
    }
    if specs.is_empty() {
        return Err(CliError::local("nothing to apply: no function spec found"));
    }
    Ok(specs)
}

/// The spec files `path` names: itself, or a directory's `.yaml`, `.yml` and `.json`
/// files in name order (not its subdirectories).
fn spec_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path == Path::new("-") {
        return Ok(vec![path.to_owned()]);
    }
    let metadata = std::fs::metadata(path)
        .map_err(|e| CliError::local(format!("cannot read {}: {e}", path.display())))?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| CliError::local(format!("cannot read {}: {e}", path.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && kind(p).is_some())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CliError::local(format!(
            "{} has no .yaml, .yml or .json spec file",
            path.display()
        )));
    }
    Ok(files)
}

/// How a file is read, by its extension (`None`: not a spec file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Json,
    Yaml,
}

fn kind(path: &Path) -> Option<Kind> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "json" => Some(Kind::Json),
        "yaml" | "yml" => Some(Kind::Yaml),
        _ => None,
    }
}

/// The specs of one file, or what is wrong with it.
fn read_file(path: &Path) -> Result<Vec<Spec>, String> {
    let shown = if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    };
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|e| format!("{shown}: cannot read it: {e}"))?;
    // JSON is YAML too; a file named .json is read as JSON for JSON's error messages.
    let documents = if kind(path) == Some(Kind::Json) {
        vec![serde_json::from_str::<Value>(&text).map_err(|e| format!("{shown}: not JSON: {e}"))?]
    } else {
        parse_yaml(&text).map_err(|e| format!("{shown}: not YAML: {e}"))?
    };
    let several = documents.len() > 1;
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    for (i, document) in documents.into_iter().enumerate() {
        let origin = if several {
            format!("{shown}#{}", i + 1)
        } else {
            shown.clone()
        };
        match FunctionSpec::from_json(&document) {
            Ok(spec) => specs.push(Spec {
                origin,
                document,
                spec,
            }),
            Err(errors) => problems.push(format!("{origin}: {errors}")),
        }
    }
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(problems.join("\n  "))
    }
}

/// The documents of a YAML text (`---` separates them; empty ones are skipped).
fn parse_yaml(text: &str) -> Result<Vec<Value>, yaml_serde::Error> {
    use serde::Deserialize;
    let mut documents = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_yaml_file_may_hold_several_specs() {
        let docs =
            parse_yaml("name: a\nimage: x\nexecutionMode: LOCAL\n---\nname: b\nimage: y\n---\n")
                .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["name"], "b");
    }

    #[test]
    fn bad_specs_are_all_named_and_nothing_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "name: a\nimage: x\nexecutionMode: LOCAL\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.json"), "{\"name\": \"1bad\"}").unwrap();
        std::fs::write(dir.path().join("c.yaml"), "name: [unclosed").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a spec").unwrap();
        let error = read_all(&[dir.path().to_owned()]).unwrap_err().to_string();
        assert!(error.starts_with("nothing applied"), "{error}");
        assert!(error.contains("b.json: invalid function spec"), "{error}");
        assert!(error.contains("c.yaml: not YAML"), "{error}");
        assert!(!error.contains("a.yaml"), "{error}");
        assert!(!error.contains("notes.txt"), "{error}");
    }

    #[test]
    fn a_name_given_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["a.yaml", "b.yml"] {
            std::fs::write(
                dir.path().join(file),
                "name: a\nimage: x\nexecutionMode: LOCAL\n",
            )
            .unwrap();
        }
        let error = read_all(&[dir.path().to_owned()]).unwrap_err().to_string();
        assert!(error.contains("more than one spec"), "{error}");
    }
}
