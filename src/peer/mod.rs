//! The peer wire protocol (BEP 3) and its extensions (BEP 10, 9, 11).
