//! Writes the SmscCluster CRD YAML to `config/crd/` and the chart's `crds/` (`make crds`).
//! Usage: `crdgen [REPO_ROOT]` (default: the workspace this binary was built from);
//! `crdgen --stdout` prints it instead.

use std::path::PathBuf;
use std::process::ExitCode;

use smsc_api::crd::{crd_yaml, CRD_YAML_PATHS};

fn main() -> ExitCode {
    let yaml = match crd_yaml() {
        Ok(y) => y,
        Err(e) => {
            eprintln!("crdgen: serializing the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("--stdout") {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    let root =
        arg.map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."));
    for rel in CRD_YAML_PATHS {
        let path = root.join(rel);
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("crdgen: creating {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
        if let Err(e) = std::fs::write(&path, &yaml) {
            eprintln!("crdgen: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("crdgen: wrote {rel}");
    }
    ExitCode::SUCCESS
}
