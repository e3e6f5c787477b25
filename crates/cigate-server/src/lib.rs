//! cigate-server
