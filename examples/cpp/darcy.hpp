// A solver developer's own Darcy code, shared by the C++ examples: -div(a grad u) = f on the unit
// square, u = 0 on the boundary, five-point flux form with arithmetic-mean face permeabilities on
// the n x n grid that includes the boundary (h = 1/(n-1)); Jacobi-preconditioned CG; the adjoint
// of the operator with respect to a. Fields are row-major [ny][nx] with the boundary held at zero.
// The examples check this operator against the model's residual before trusting either.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace darcy {

using field = std::vector<double>;

// A field file: "PIDDMF32", u32 count, channels, ny, nx, then float32 [count][channels][ny][nx].
struct fields {
    std::uint32_t count = 0, channels = 0, ny = 0, nx = 0;
    std::vector<float> data;
    std::size_t plane() const { return std::size_t(ny) * nx; }
    const float *at(std::size_t s, std::size_t c) const { return data.data() + (s * channels + c) * plane(); }
    float *at(std::size_t s, std::size_t c) { return data.data() + (s * channels + c) * plane(); }
};

inline fields read_fields(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open the field file " + path);
    char magic[8];
    fields f;
    std::uint32_t dims[4];
    in.read(magic, 8);
    in.read(reinterpret_cast<char *>(dims), sizeof dims);
    if (!in || std::memcmp(magic, "PIDDMF32", 8) != 0) throw std::runtime_error(path + " is not a piddm field file");
    f.count = dims[0], f.channels = dims[1], f.ny = dims[2], f.nx = dims[3];
    f.data.resize(std::size_t(f.count) * f.channels * f.plane());
    in.read(reinterpret_cast<char *>(f.data.data()), std::streamsize(f.data.size() * sizeof(float)));
    if (!in) throw std::runtime_error(path + " is truncated");
    return f;
}

inline void write_fields(const std::string &path, const fields &f) {
    std::ofstream out(path, std::ios::binary);
    std::uint32_t dims[4] = {f.count, f.channels, f.ny, f.nx};
    out.write("PIDDMF32", 8);
    out.write(reinterpret_cast<const char *>(dims), sizeof dims);
    out.write(reinterpret_cast<const char *>(f.data.data()), std::streamsize(f.data.size() * sizeof(float)));
    if (!out) throw std::runtime_error("cannot write " + path);
}

struct grid {
    std::size_t n;  // points per side, boundary included
    double ih2() const { return double(n - 1) * double(n - 1); }
    template <class F> void interior(F &&f) const {
        for (std::size_t j = 1; j + 1 < n; ++j)
            for (std::size_t i = 1; i + 1 < n; ++i) f(j * n + i);
    }
};

// Row p of A(a): (A x)_p = c x_p + e x_{p+1} + w x_{p-1} + n x_{p+nx} + s x_{p-nx}.
struct row {
    double c, e, w, n, s;
};
inline row stencil(const grid &g, const field &a, std::size_t p) {
    const std::size_t n = g.n;
    const double ae = 0.5 * (a[p] + a[p + 1]), aw = 0.5 * (a[p] + a[p - 1]);
    const double an = 0.5 * (a[p] + a[p + n]), as = 0.5 * (a[p] + a[p - n]);
    const double k = g.ih2();
    return {k * (ae + aw + an + as), -k * ae, -k * aw, -k * an, -k * as};
}

// y = A(a) x on the interior, zero on the boundary.
inline void apply(const grid &g, const field &a, const field &x, field &y) {
    const std::size_t n = g.n;
    std::fill(y.begin(), y.end(), 0.0);
    g.interior([&](std::size_t p) {
        const row r = stencil(g, a, p);
        y[p] = r.c * x[p] + r.e * x[p + 1] + r.w * x[p - 1] + r.n * x[p + n] + r.s * x[p - n];
    });
}

// g_a += d/da [ lambda . A(a) u ]: the operator is linear in a, so this is B(u)^T lambda.
inline void apply_adjoint_a(const grid &g, const field &u, const field &lambda, field &ga) {
    const std::size_t n = g.n;
    g.interior([&](std::size_t p) {
        const double l = -g.ih2() * lambda[p] * 0.5;
        const std::size_t nb[4] = {p + 1, p - 1, p + n, p - n};
        for (std::size_t q : nb) {
            // face term 0.5 (a_p + a_q) (u_q - u_p)
            ga[p] += l * (u[q] - u[p]);
            ga[q] += l * (u[q] - u[p]);
        }
    });
}

inline double dot(const field &x, const field &y) {
    double s = 0;
    for (std::size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
    return s;
}

struct pcg_result {
    std::vector<int> iters;       // iterations at which each tolerance was first reached (-1: not)
    std::vector<double> seconds;  // and the seconds
    double initial = 0;           // ||b - A x0|| / ||b||
};

// Jacobi-PCG from the given x (its boundary is zeroed) until ||b - A x|| <= tols.back() ||b||.
inline pcg_result pcg(const grid &g, const field &a, const field &b, field &x, const std::vector<double> &tols,
                      int maxit = 5000) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    const std::size_t n = g.n, len = n * n;
    field d(len, 1.0), r(len), z(len), p(len), q(len);
    for (std::size_t i = 0; i < len; ++i) {
        const std::size_t ix = i % n, iy = i / n;
        if (ix == 0 || iy == 0 || ix == n - 1 || iy == n - 1) x[i] = 0;
    }
    g.interior([&](std::size_t k) { d[k] = stencil(g, a, k).c; });
    apply(g, a, x, q);
    for (std::size_t i = 0; i < len; ++i) r[i] = b[i] - q[i];
    const double bnorm = std::sqrt(dot(b, b));
    pcg_result res{std::vector<int>(tols.size(), -1), std::vector<double>(tols.size(), -1.0)};
    std::size_t t = 0;
    double rz = 0;
    for (int k = 0;; ++k) {
        const double rnorm = std::sqrt(dot(r, r));
        if (k == 0) res.initial = rnorm / bnorm;
        while (t < tols.size() && rnorm <= tols[t] * bnorm) {
            res.iters[t] = k;
            res.seconds[t] = std::chrono::duration<double>(clock::now() - t0).count();
            ++t;
        }
        if (t == tols.size() || k >= maxit) break;
        for (std::size_t i = 0; i < len; ++i) z[i] = r[i] / d[i];
        const double rz_new = dot(r, z);
        for (std::size_t i = 0; i < len; ++i) p[i] = k == 0 ? z[i] : z[i] + rz_new / rz * p[i];
        rz = rz_new;
        apply(g, a, p, q);
        const double alpha = rz / dot(p, q);
        for (std::size_t i = 0; i < len; ++i) {
            x[i] += alpha * p[i];
            r[i] -= alpha * q[i];
        }
    }
    return res;
}

// x = A(a)^-1 b on the interior (zero on the boundary) by banded Cholesky: A is symmetric positive
// definite with half-bandwidth n - 2 in the interior's row-major order, so the factor costs about
// (n - 2)^4 multiply-adds and the answer is exact to rounding, with no tolerance to choose; the
// sampler's forward solve, where PCG to a tight tolerance costs several times more.
inline void cholesky_solve(const grid &g, const field &a, const field &b, field &x) {
    const std::size_t n = g.n, m = n - 2, N = m * m, w = m;
    std::vector<double> L(N * (w + 1), 0.0);  // L(i, j), j in [i - w, i], at L[i (w + 1) + i - j]
    auto at = [&](std::size_t i, std::size_t j) -> double & { return L[i * (w + 1) + (i - j)]; };
    for (std::size_t jy = 1; jy + 1 < n; ++jy)
        for (std::size_t ix = 1; ix + 1 < n; ++ix) {
            const std::size_t i = (jy - 1) * m + (ix - 1);
            const row r = stencil(g, a, jy * n + ix);
            at(i, i) = r.c;
            if (ix > 1) at(i, i - 1) = r.w;
            if (jy > 1) at(i, i - m) = r.s;
        }
    for (std::size_t i = 0; i < N; ++i)
        for (std::size_t j = i > w ? i - w : 0; j <= i; ++j) {
            double s = at(i, j);
            const std::size_t k0 = std::max(i > w ? i - w : 0, j > w ? j - w : 0);
            const double *li = &L[i * (w + 1) + i - k0], *lj = &L[j * (w + 1) + j - k0];
            for (std::size_t k = k0; k < j; ++k) s -= *li-- * *lj--;
            if (i == j) {
                if (!(s > 0)) throw std::runtime_error("cholesky_solve: A(a) is not positive definite");
                at(i, i) = std::sqrt(s);
            } else {
                at(i, j) = s / at(j, j);
            }
        }
    field y(N);
    for (std::size_t i = 0; i < N; ++i) {
        double s = b[(i / m + 1) * n + i % m + 1];
        for (std::size_t k = i > w ? i - w : 0; k < i; ++k) s -= at(i, k) * y[k];
        y[i] = s / at(i, i);
    }
    for (std::size_t i = N; i-- > 0;) {
        double s = y[i];
        for (std::size_t k = i + 1; k <= std::min(N - 1, i + w); ++k) s -= at(k, i) * y[k];
        y[i] = s / at(i, i);
    }
    x.assign(n * n, 0.0);
    for (std::size_t i = 0; i < N; ++i) x[(i / m + 1) * n + i % m + 1] = y[i];
}

inline double rel_l2(const field &x, const field &ref) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < x.size(); ++i) num += (x[i] - ref[i]) * (x[i] - ref[i]), den += ref[i] * ref[i];
    return std::sqrt(num / den);
}

inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

inline field to_field(const float *p, std::size_t len) { return field(p, p + len); }

// The right-hand side: f on the interior, zero on the boundary.
inline field rhs(const grid &g, const float *f) {
    field b(g.n * g.n, 0.0);
    g.interior([&](std::size_t p) { b[p] = f[p]; });
    return b;
}

}  // namespace darcy
