//! nectar-vfs
