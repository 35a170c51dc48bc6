//! einsum, decomposed into reduce / transpose / reshape / matmul.

use super::{matmul, reduce, reshape, transpose};
use crate::error::{Error, Result};
use crate::graph::Tensor;
use crate::ops::ReduceKind;

fn err(eq: &str, msg: impl std::fmt::Display) -> Error {
    Error::value("einsum", format!("{eq:?}: {msg}"))
}

/// `einsum("bij,bjk->bik", [a, b])`. Operands are folded left to right;
/// each pairwise step becomes one batched matmul.
pub fn einsum(eq: &str, xs: &[Tensor]) -> Result<Tensor> {
    let eq_clean: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    if eq_clean.contains("...") {
        return Err(err(eq, "ellipsis is not supported; spell the axes out"));
    }
    let (lhs, out) = match eq_clean.split_once("->") {
        Some((l, o)) => (l.to_string(), Some(o.to_string())),
        None => (eq_clean.clone(), None),
    };
    let ins: Vec<Vec<char>> = lhs.split(',').map(|s| s.chars().collect()).collect();
    if ins.len() != xs.len() {
        return Err(err(eq, format!("names {} operands but {} were given", ins.len(), xs.len())));
    }
    for (k, (labels, x)) in ins.iter().zip(xs).enumerate() {
        if labels.len() != x.rank() {
            return Err(err(eq, format!("operand {k} has rank {} but its subscript {:?} has {} letters", x.rank(), labels.iter().collect::<String>(), labels.len())));
        }
        if labels.iter().any(|c| !c.is_ascii_alphabetic()) {
            return Err(err(eq, "subscripts must be letters"));
        }
        for (i, c) in labels.iter().enumerate() {
            if labels[i + 1..].contains(c) {
                return Err(err(eq, format!("letter {c:?} repeats within operand {k} (diagonals are not supported)")));
            }
        }
    }
    let out: Vec<char> = match out {
        Some(o) => o.chars().collect(),
        None => {
            let mut once: Vec<char> = ins.iter().flatten().copied().filter(|c| ins.iter().flatten().filter(|d| *d == c).count() == 1).collect();
            once.sort_unstable();
            once
        }
    };
    let mut acc = (xs[0].clone(), ins[0].clone());
    for k in 1..xs.len() {
        // Letters still needed after this step: the output and later operands.
        let needed: Vec<char> = out.iter().chain(ins[k + 1..].iter().flatten()).copied().collect();
        acc = pair(eq, acc, (xs[k].clone(), ins[k].clone()), &needed)?;
    }
    let (t, labels) = reduce_unneeded(acc.0, acc.1, &out, &[])?;
    let mut perm = vec![];
    for c in &out {
        let p = labels.iter().position(|d| d == c).ok_or_else(|| err(eq, format!("output letter {c:?} is not in any input")))?;
        perm.push(p);
    }
    transpose(&t, &perm)
}

/// Sums away axes whose letter appears neither in `keep` nor in `other`.
fn reduce_unneeded(t: Tensor, labels: Vec<char>, keep: &[char], other: &[char]) -> Result<(Tensor, Vec<char>)> {
    let drop: Vec<i64> = labels.iter().enumerate().filter(|(_, c)| !keep.contains(c) && !other.contains(c)).map(|(i, _)| i as i64).collect();
    if drop.is_empty() {
        return Ok((t, labels));
    }
    let kept: Vec<char> = labels.iter().enumerate().filter(|(i, _)| !drop.contains(&(*i as i64))).map(|(_, c)| *c).collect();
    Ok((reduce(&t, ReduceKind::Sum, Some(&drop), false)?, kept))
}

fn pair(eq: &str, a: (Tensor, Vec<char>), b: (Tensor, Vec<char>), needed: &[char]) -> Result<(Tensor, Vec<char>)> {
    let (a, la) = reduce_unneeded(a.0, a.1, needed, &b.1)?;
    let (b, lb) = reduce_unneeded(b.0, b.1, needed, &la)?;
    let size = |t: &Tensor, l: &[char], c: char| t.shape()[l.iter().position(|&d| d == c).unwrap_or(0)];
    let batch: Vec<char> = la.iter().copied().filter(|c| lb.contains(c) && needed.contains(c)).collect();
    let contr: Vec<char> = la.iter().copied().filter(|c| lb.contains(c) && !needed.contains(c)).collect();
    let af: Vec<char> = la.iter().copied().filter(|c| !lb.contains(c)).collect();
    let bf: Vec<char> = lb.iter().copied().filter(|c| !la.contains(c)).collect();
    for &c in batch.iter().chain(&contr) {
        if size(&a, &la, c) != size(&b, &lb, c) {
            return Err(err(eq, format!("letter {c:?} has size {} in one operand and {} in the other", size(&a, &la, c), size(&b, &lb, c))));
        }
    }
    let pos = |l: &[char], cs: &[char]| -> Vec<usize> { cs.iter().map(|c| l.iter().position(|d| d == c).unwrap_or(0)).collect() };
    let prod = |t: &Tensor, l: &[char], cs: &[char]| -> usize { cs.iter().map(|&c| size(t, l, c)).product() };
    let (nb, m, k, n) = (prod(&a, &la, &batch), prod(&a, &la, &af), prod(&a, &la, &contr), prod(&b, &lb, &bf));
    let at = transpose(&a, &[pos(&la, &batch), pos(&la, &af), pos(&la, &contr)].concat())?;
    let bt = transpose(&b, &[pos(&lb, &batch), pos(&lb, &contr), pos(&lb, &bf)].concat())?;
    let y = matmul(&reshape(&at, &[nb, m, k])?, &reshape(&bt, &[nb, k, n])?)?;
    let mut shape: Vec<usize> = batch.iter().map(|&c| size(&a, &la, c)).collect();
    shape.extend(af.iter().map(|&c| size(&a, &la, c)));
    shape.extend(bf.iter().map(|&c| size(&b, &lb, c)));
    // A full contraction ("i,i->") leaves a 0-d result, as numpy's einsum does.
    let labels = [batch, af, bf].concat();
    Ok((reshape(&y, &shape)?, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::input;
    use crate::DType;

    #[test]
    fn a_full_contraction_is_zero_dimensional() {
        // Bug: "i,i->" was reshaped to [1] and then refused by the final
        // transpose ("perm [] is not a permutation of the 1 axes").
        let a = input(&[6], DType::F16, None).unwrap();
        let b = input(&[6], DType::F16, None).unwrap();
        assert_eq!(einsum("i,i->", &[a.clone(), b.clone()]).unwrap().shape(), &[] as &[usize]);
        assert_eq!(einsum("i,i", &[a, b]).unwrap().shape(), &[] as &[usize]);
    }
}
