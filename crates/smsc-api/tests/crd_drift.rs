//! The committed CRD YAML must be what the code generates.

use std::path::Path;

use smsc_api::crd::{crd_yaml, CRD_YAML_PATHS};

#[test]
fn committed_crd_yaml_matches_the_code() {
    let want = crd_yaml().expect("the CRD serializes to YAML");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for rel in CRD_YAML_PATHS {
        let have = std::fs::read_to_string(root.join(rel)).unwrap_or_default();
        assert!(
            have == want,
            "{rel} differs from what crates/smsc-api/src/crd generates (or is missing): run `make crds` and commit the result"
        );
    }
}
