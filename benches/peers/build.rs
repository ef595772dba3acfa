//! Generates the tonic `Echo` service with tonic-build's manual builder: the
//! message types are hand-written `prost::Message` structs (src/tonic_peer.rs),
//! so no `.proto` file and no `protoc` binary are involved.

fn main() {
    let echo = tonic_build::manual::Method::builder()
        .name("echo")
        .route_name("Echo")
        .input_type("crate::tonic_peer::EchoMsg")
        .output_type("crate::tonic_peer::EchoMsg")
        .codec_path("tonic_prost::ProstCodec")
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("Echo")
        .package("peers")
        .method(echo)
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
    println!("cargo:rerun-if-changed=build.rs");
}
