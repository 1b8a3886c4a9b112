//! Compiles `proto/missive.proto` with protox (a pure-Rust protobuf compiler) and prost-build, so
//! building needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/missive.proto");
    let descriptors = protox::compile(["missive.proto"], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
