//! nectar-fuse
