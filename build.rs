// Compiles berth's own admin API (the CRI types come from the k8s-cri crate).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .compile_protos(&["proto/berth/admin/v1/admin.proto"], &["proto"])?;
    Ok(())
}
