//! Least-squares line through (x, y) points: how a figure grows per pod.

/// `y = intercept + slope * x`; `None` with fewer than two distinct x.
pub fn line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if n < 2.0 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = sxy / sxx;
    Some((mean_y - slope * mean_x, slope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_a_line_and_refuses_one_point() {
        let (b, m) = line(&[(10.0, 25.0), (20.0, 45.0), (30.0, 65.0)]).unwrap();
        assert!((m - 2.0).abs() < 1e-9 && (b - 5.0).abs() < 1e-9);
        // Noise around y = 1 + 3x still fits its slope by least squares.
        let (_, m) = line(&[(0.0, 1.0), (1.0, 5.0), (2.0, 7.0), (3.0, 10.0)]).unwrap();
        assert!((m - 2.9).abs() < 1e-9, "{m}");
        assert!(line(&[(1.0, 1.0)]).is_none());
        assert!(line(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }
}
