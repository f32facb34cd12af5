//! Path normalisation for tar member names: a lexical clean (Plan 9 `cleanname` rules) in
//! which `..` stops at the root, so no name can point outside the image.

/// Splits a member name into clean components: empty and `.` components dropped, `..`
/// removes the previous component and is ignored at the root. Leading `/` and `./` vanish.
pub fn components(name: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The clean relative path (`a/b/c`); the empty string means the root.
pub fn clean(name: &[u8]) -> Vec<u8> {
    components(name).join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans() {
        for (i, o) in [
            ("", ""),
            ("/", ""),
            ("./", ""),
            ("./a/b/", "a/b"),
            ("a//b/./c", "a/b/c"),
            ("../../etc/passwd", "etc/passwd"),
            ("/a/../../b", "b"),
            ("a/b/../c", "a/c"),
            ("a/..", ""),
            ("...", "..."),
            ("a/.wh..wh..opq", "a/.wh..wh..opq"),
        ] {
            assert_eq!(String::from_utf8(clean(i.as_bytes())).unwrap(), o, "{i}");
        }
    }
}
