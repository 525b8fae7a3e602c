//! Raw FFI bindings to DPDK. Not generated yet: the build script stops with a message.
