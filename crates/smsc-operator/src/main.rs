//! `smsc-operator`: runs the SmscCluster controller, or renders children offline.

fn main() {}
