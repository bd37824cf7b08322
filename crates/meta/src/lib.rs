//! nectar-meta
