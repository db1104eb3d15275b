//! SMPP 3.4 protocol layer: wire codec, text encodings, delivery receipts and an async session.
//!
//! No Kubernetes and no configuration live here; everything above (smscd, the bench tool) builds
//! on these types.
