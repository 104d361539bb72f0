//! Aloft's OTA server.
