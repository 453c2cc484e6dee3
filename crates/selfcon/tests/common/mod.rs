//! Helpers shared by the integration tests.

/// The error of `r`, checked to be a user error rendered as one line.
pub fn user_error<T>(r: selfcon::Result<T>) -> String {
    let e = r.err().expect("should fail");
    assert!(e.is_user_error(), "{e}");
    let s = e.to_string();
    assert_eq!(s.lines().count(), 1, "{s}");
    s
}
