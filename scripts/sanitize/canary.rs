// Canary of `scripts/sanitize.sh asan|valgrind`: a read past a heap block, which ASan (this
// file built with -Zsanitizer=address) and memcheck must report. If it ran cleanly, the
// tool would not be watching, and "zero reports" would mean nothing.
fn main() {
    let v: Vec<u8> = std::hint::black_box(vec![1_u8; 16]);
    let p = v.as_ptr();
    // SAFETY: none; reading one byte past the allocation is the point.
    let past = unsafe { std::ptr::read_volatile(p.add(16)) };
    println!("read {past} past the end: AddressSanitizer is not active");
}
