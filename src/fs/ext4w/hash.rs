//! Directory-index name hashes (legacy, half-MD4 and TEA), as selected by
//! the htree root's hash version and the superblock's signedness flag.

/// Hash version numbers stored in `s_def_hash_version` and the dx root.
pub const HASH_LEGACY: u8 = 0;
/// Half-MD4 hash.
pub const HASH_HALF_MD4: u8 = 1;
/// TEA hash.
pub const HASH_TEA: u8 = 2;

/// Major hash of `name` for an htree directory (bit 0 cleared, as stored in
/// index entries). `unsigned_chars` follows the superblock's
/// `EXT2_FLAGS_UNSIGNED_HASH` flag; `seed` is `s_hash_seed`.
pub fn name_hash(version: u8, name: &[u8], seed: [u32; 4], unsigned_chars: bool) -> Option<u32> {
    let mut state = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    if seed.iter().any(|&w| w != 0) {
        state = seed;
    }
    let hash = match version {
        HASH_LEGACY => legacy(name, unsigned_chars),
        HASH_HALF_MD4 => {
            let mut rest = name;
            loop {
                let words = pack(rest, 8, unsigned_chars);
                half_md4(&mut state, &words);
                if rest.len() <= 32 {
                    break;
                }
                rest = &rest[32..];
            }
            state[1]
        }
        HASH_TEA => {
            let mut rest = name;
            loop {
                let words = pack(rest, 4, unsigned_chars);
                tea(&mut state, &words);
                if rest.len() <= 16 {
                    break;
                }
                rest = &rest[16..];
            }
            state[0]
        }
        _ => return None,
    };
    let hash = hash & !1;
    // The all-ones value marks end-of-directory in readdir cookies.
    Some(if hash == 0xFFFF_FFFE { 0xFFFF_FFFC } else { hash })
}

fn char_value(b: u8, unsigned_chars: bool) -> u32 {
    if unsigned_chars {
        u32::from(b)
    } else {
        i32::from(b as i8) as u32
    }
}

/// Packs up to `4 * num` bytes of `msg` into `num` words, big-end first,
/// padding with a word made of the remaining length.
fn pack(msg: &[u8], num: usize, unsigned_chars: bool) -> [u32; 8] {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut out = [pad; 8];
    let take = msg.len().min(num * 4);
    let mut val = pad;
    let mut filled = 0;
    for (i, &b) in msg[..take].iter().enumerate() {
        val = char_value(b, unsigned_chars).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[filled] = val;
            filled += 1;
            val = pad;
        }
    }
    if filled < num {
        out[filled] = val;
    }
    out
}

fn legacy(name: &[u8], unsigned_chars: bool) -> u32 {
    let (mut h0, mut h1): (u32, u32) = (0x12a3_fe2d, 0x37ab_e8f9);
    for &b in name {
        let c = char_value(b, unsigned_chars);
        let mut h = h1.wrapping_add(h0 ^ c.wrapping_mul(7_152_373));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7fff_ffff);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

fn half_md4(buf: &mut [u32; 4], x: &[u32; 8]) {
    fn f(x: u32, y: u32, z: u32) -> u32 {
        z ^ (x & (y ^ z))
    }
    fn g(x: u32, y: u32, z: u32) -> u32 {
        (x & y).wrapping_add((x ^ y) & z)
    }
    fn h(x: u32, y: u32, z: u32) -> u32 {
        x ^ y ^ z
    }
    type Mix = fn(u32, u32, u32) -> u32;
    type Round = (Mix, u32, [(usize, u32); 8]);
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    // (function, constant, [(word, shift); 8]) per round; the register
    // rotation a,d,c,b is the same in every round.
    let rounds: [Round; 3] = [
        (
            f,
            0,
            [(0, 3), (1, 7), (2, 11), (3, 19), (4, 3), (5, 7), (6, 11), (7, 19)],
        ),
        (
            g,
            K2,
            [(1, 3), (3, 5), (5, 9), (7, 13), (0, 3), (2, 5), (4, 9), (6, 13)],
        ),
        (
            h,
            K3,
            [(3, 3), (7, 9), (2, 11), (6, 15), (1, 3), (5, 9), (0, 11), (4, 15)],
        ),
    ];
    let mut r = *buf; // r[0]=a r[1]=b r[2]=c r[3]=d
    for (mix, k, steps) in rounds {
        for (i, (word, shift)) in steps.into_iter().enumerate() {
            // Target register cycles a, d, c, b.
            let t = [0, 3, 2, 1][i % 4];
            let (b, c, d) = (r[(t + 1) % 4], r[(t + 2) % 4], r[(t + 3) % 4]);
            r[t] = r[t]
                .wrapping_add(mix(b, c, d))
                .wrapping_add(x[word].wrapping_add(k))
                .rotate_left(shift);
        }
    }
    for i in 0..4 {
        buf[i] = buf[i].wrapping_add(r[i]);
    }
}

fn tea(buf: &mut [u32; 4], x: &[u32; 8]) {
    const DELTA: u32 = 0x9E37_79B9;
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let (a, b, c, d) = (x[0], x[1], x[2], x[3]);
    let mut sum: u32 = 0;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add((b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b));
        b1 = b1.wrapping_add((b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d));
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}
