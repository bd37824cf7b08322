//! nectar-chunk
