//! The descriptor set is complete enough for both gRPC reflection services
//! (grpcurl's older builds speak only v1alpha).

use flowscope_proto::FILE_DESCRIPTOR_SET;

#[test]
fn reflection_services_build() {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("v1 reflection");
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("v1alpha reflection");
}
