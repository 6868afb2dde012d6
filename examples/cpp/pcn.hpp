// Preconditioned Crank-Nicolson MCMC (Cotter, Roberts, Stuart and White 2013) for a posterior whose
// prior is a standard normal on coefficients theta, and its convergence checks: split R-hat across
// chains and the effective sample size (Geyer's initial positive sequence). Nothing here knows the
// PDE: the log-likelihood is the caller's.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <functional>
#include <random>
#include <vector>

namespace pcn {

using vec = std::vector<double>;

struct settings {
    std::size_t steps = 10000;  // proposals per chain, burn-in included
    std::size_t burn_in = 5000; // proposals discarded (beta is tuned during them)
    std::size_t thin = 10;      // keep every thin-th state after burn-in
    double beta = 0.2;          // initial step: theta' = sqrt(1 - beta^2) theta + beta xi
    double target = 0.25;       // acceptance the burn-in tunes beta towards
};

struct chain {
    std::vector<vec> kept;      // what `keep` made of each kept state
    vec trace;                  // the negative log-likelihood of each kept state
    double acceptance = 0;      // after burn-in
    double beta = 0;            // the tuned step
    double seconds = 0;
};

// One chain from theta0. `phi(theta)` is the negative log-likelihood (may return +inf to reject);
// `keep(theta)` maps a kept state to what the caller wants stored (the field, not the coefficients).
inline chain run(vec theta, const std::function<double(const vec &)> &phi,
                 const std::function<vec(const vec &)> &keep, const settings &s, std::uint64_t seed) {
    const auto t0 = std::chrono::steady_clock::now();
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal;
    std::uniform_real_distribution<double> uniform;
    chain c;
    double beta = s.beta, f = phi(theta);
    std::size_t accepted = 0, window_accepted = 0, window = 0;
    vec trial(theta.size());
    for (std::size_t k = 0; k < s.steps; ++k) {
        const double keep_part = std::sqrt(1.0 - beta * beta);
        for (std::size_t i = 0; i < theta.size(); ++i) trial[i] = keep_part * theta[i] + beta * normal(rng);
        const double ft = phi(trial);
        const bool accept = std::isfinite(ft) && std::log(uniform(rng)) < f - ft;
        if (accept) theta.swap(trial), f = ft;
        if (k < s.burn_in) {
            // Robbins-Monro on log beta over windows of 100 proposals, frozen after burn-in
            window_accepted += accept, ++window;
            if (window == 100) {
                const double rate = double(window_accepted) / double(window);
                beta = std::clamp(beta * std::exp(rate - s.target), 1e-4, 1.0);
                window = window_accepted = 0;
            }
            continue;
        }
        accepted += accept;
        if ((k - s.burn_in) % s.thin == 0) {
            c.kept.push_back(keep(theta));
            c.trace.push_back(f);
        }
    }
    c.acceptance = s.steps > s.burn_in ? double(accepted) / double(s.steps - s.burn_in) : 0.0;
    c.beta = beta;
    c.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return c;
}

inline double mean(const vec &x) {
    double m = 0;
    for (double v : x) m += v;
    return m / double(x.size());
}

// Pointwise mean and sample standard deviation of draws of one field (at least two).
inline void moments(const std::vector<vec> &draws, vec &mean, vec &sd) {
    const std::size_t len = draws.at(0).size();
    const double n = double(draws.size());
    mean.assign(len, 0.0), sd.assign(len, 0.0);
    for (const vec &x : draws)
        for (std::size_t i = 0; i < len; ++i) mean[i] += x[i] / n;
    for (const vec &x : draws)
        for (std::size_t i = 0; i < len; ++i) sd[i] += (x[i] - mean[i]) * (x[i] - mean[i]) / (n - 1);
    for (double &v : sd) v = std::sqrt(v);
}

// Effective sample size of one series: n / (1 + 2 sum of autocorrelations), the sum over Geyer's
// initial positive sequence of lag pairs.
inline double ess(const vec &x) {
    const std::size_t n = x.size();
    if (n < 4) return double(n);
    const double m = mean(x);
    double c0 = 0;
    for (double v : x) c0 += (v - m) * (v - m);
    c0 /= double(n);
    if (c0 <= 0) return double(n);
    auto rho = [&](std::size_t lag) {
        double c = 0;
        for (std::size_t i = 0; i + lag < n; ++i) c += (x[i] - m) * (x[i + lag] - m);
        return c / double(n) / c0;
    };
    double sum = 0;
    for (std::size_t t = 1; t + 1 < n; t += 2) {
        const double pair = rho(t) + rho(t + 1);
        if (pair <= 0) break;
        sum += pair;
    }
    return double(n) / (1.0 + 2.0 * sum);
}

// Split R-hat (Gelman et al.): each chain's series halved, between- against within-half variance.
// 1 when the halves agree; NaN when every half is constant at the same value (nothing to compare).
inline double split_rhat(const std::vector<vec> &series) {
    std::vector<vec> halves;
    for (const vec &x : series) {
        const std::size_t h = x.size() / 2;
        halves.emplace_back(x.begin(), x.begin() + std::ptrdiff_t(h));
        halves.emplace_back(x.begin() + std::ptrdiff_t(h), x.begin() + std::ptrdiff_t(2 * h));
    }
    const double n = double(halves[0].size()), m = double(halves.size());
    vec means;
    double w = 0;
    for (const vec &x : halves) {
        const double mu = mean(x);
        means.push_back(mu);
        double v = 0;
        for (double e : x) v += (e - mu) * (e - mu);
        w += v / (n - 1) / m;
    }
    const double grand = mean(means);
    double b = 0;
    for (double mu : means) b += (mu - grand) * (mu - grand);
    b *= n / (m - 1);
    if (w <= 0) return b <= 0 ? std::nan("") : INFINITY;
    return std::sqrt(((n - 1) / n * w + b / n) / w);
}

// Continuous ranked probability score of an ensemble against one value: E|X - y| - E|X - X'| / 2.
inline double crps(vec x, double y) {
    std::sort(x.begin(), x.end());
    const double n = double(x.size());
    double first = 0, pairs = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        first += std::abs(x[i] - y);
        pairs += x[i] * (2.0 * double(i) - n + 1.0);  // sum over pairs of |x_i - x_j|, sorted, halved
    }
    return first / n - pairs / (n * n);
}

}  // namespace pcn
