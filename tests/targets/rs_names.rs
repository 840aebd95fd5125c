// rs_names: Rust functions probed by their demangled names (a module
// function, a method, a generic function), built by the test harness
// with rustc in release mode, with and without debug info.
use std::hint::black_box;

mod rs1 {
    #[inline(never)]
    pub fn compute(x: u64) -> u64 {
        std::hint::black_box(x) * 3 + 1
    }
}

mod rs2 {
    pub struct Acc {
        pub total: u64,
    }

    impl Acc {
        #[inline(never)]
        pub fn add(&mut self, v: u64) -> u64 {
            self.total = self.total.wrapping_add(std::hint::black_box(v));
            self.total
        }
    }

    #[inline(never)]
    pub fn largest<T: PartialOrd + Copy>(a: T, b: T) -> T {
        if std::hint::black_box(a) > b {
            a
        } else {
            b
        }
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let mut acc = rs2::Acc { total: 0 };
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(rs1::compute(black_box(i)));
        acc.add(i);
        sum = sum.wrapping_add(rs2::largest(i, 3));
        sum = sum.wrapping_add(rs2::largest(i as u32, 4) as u64);
    }
    println!("sum={} total={}", sum, acc.total);
}
