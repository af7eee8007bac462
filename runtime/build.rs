//! Compiles the hop's protocol (proto/sluice/hop/v1/hop.proto) into Rust when the `hop`
//! feature is on. protox parses the `.proto` in Rust, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "hop")]
    {
        let proto = "../proto/sluice/hop/v1/hop.proto";
        println!("cargo:rerun-if-changed={proto}");
        let fds = protox::compile([proto], ["../proto"])?;
        tonic_prost_build::configure()
            // Event bodies and the compressed batch are slices of the received buffer.
            .bytes(".sluice.hop.v1")
            .compile_fds(fds)?;
    }
    Ok(())
}
