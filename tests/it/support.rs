//! Shared support: free ports, real server helpers.
