//! Small helpers shared by the commands: the repository root, running cargo.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use cargo_metadata::{Metadata, MetadataCommand};

use crate::Result;

/// The workspace root: the parent of this crate's directory.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The cargo that runs us (`$CARGO`, set by `cargo run`), else `cargo` from `PATH`.
fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// A `cargo` command run from the repository root.
pub(crate) fn cargo(root: &Path) -> Command {
    let mut command = Command::new(cargo_program());
    command.current_dir(root);
    command
}

/// `cargo metadata --no-deps` of the workspace: members, their declared dependencies and
/// their targets. `--no-deps` needs no resolution, so it never touches `Cargo.lock`.
pub(crate) fn workspace_metadata(root: &Path) -> Result<Metadata> {
    let metadata = MetadataCommand::new()
        .cargo_path(cargo_program())
        .manifest_path(root.join("Cargo.toml"))
        .current_dir(root)
        .no_deps()
        .exec()
        .map_err(|error| format!("cargo metadata failed: {error}"))?;
    Ok(metadata)
}

/// How a command is shown to a person: `KEY=value cargo arg arg`.
pub(crate) fn display_command(command: &Command) -> String {
    let mut parts: Vec<String> = command
        .get_envs()
        .filter_map(|(key, value)| {
            value.map(|value| format!("{}={}", key.to_string_lossy(), quoted(value)))
        })
        .collect();
    let program = Path::new(command.get_program())
        .file_name()
        .unwrap_or(command.get_program())
        .to_string_lossy()
        .into_owned();
    parts.push(program);
    parts.extend(command.get_args().map(quoted));
    parts.join(" ")
}

/// A word as a shell would need it: single-quoted when it contains a space.
fn quoted(word: &std::ffi::OsStr) -> String {
    let word = word.to_string_lossy();
    if word.contains(' ') {
        format!("'{word}'")
    } else {
        word.into_owned()
    }
}

/// `path` relative to `root` when it is inside it, for messages.
pub(crate) fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};

    /// A fresh, empty scratch directory under the system temp dir, removed on drop.
    #[derive(Debug)]
    pub(crate) struct ScratchDir(PathBuf);

    impl ScratchDir {
        pub(crate) fn new(tag: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("xtask-test-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create scratch dir");
            Self(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        /// Writes `contents` to `relative`, creating parent directories.
        pub(crate) fn write(&self, relative: &str, contents: &str) -> PathBuf {
            let path = self.0.join(relative);
            std::fs::create_dir_all(path.parent().expect("file has a parent"))
                .expect("create parent dirs");
            std::fs::write(&path, contents).expect("write file");
            path
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_env_then_program_then_args() {
        let mut command = Command::new("/usr/bin/cargo");
        command
            .args(["doc", "--workspace"])
            .env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(
            display_command(&command),
            "RUSTDOCFLAGS='-D warnings' cargo doc --workspace"
        );
    }

    #[test]
    fn repo_root_is_the_workspace_root() {
        let root = repo_root();
        assert!(root.join("Cargo.toml").is_file());
        assert!(root.join("xtask").join("Cargo.toml").is_file());
    }
}
