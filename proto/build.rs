//! Compiles the gRPC contracts with the protoc binary vendored by `protoc-bin-vendored`, so a
//! machine without a system protoc builds Ferry.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("PROTOC", protoc);
    }
    tonic_prost_build::configure()
        // Row batches on the relay: decoded without a copy and handed on as they are.
        .bytes(".ferry.agent.v1.RowBatch.data")
        // The admin messages are also the REST API's JSON bodies (proto field names, missing
        // fields default) and its OpenAPI schemas: one contract for gRPC and HTTP.
        .message_attribute(
            ".ferry.admin.v1",
            "#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)] #[serde(default)]",
        )
        .type_attribute(
            ".ferry.admin.v1.InstanceEvent.body",
            "#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)] #[serde(rename_all = \"snake_case\")]",
        )
        .compile_protos(
            &[
                "proto/ferry/agent/v1/agent.proto",
                "proto/ferry/admin/v1/admin.proto",
                "proto/ferry/raft/v1/raft.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
