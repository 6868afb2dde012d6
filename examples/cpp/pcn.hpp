// Preconditioned Crank-Nicolson MCMC (Cotter, Roberts, Stuart and White 2013) for a posterior whose
// prior is a standard normal on coefficients theta, its generalisation about another Gaussian
// reference (Rudolf and Sprungk 2018: the proposal keeps N(m, C) invariant, the Metropolis-Hastings
// ratio corrects for the difference, so the chain's target stays the exact posterior), and the
// convergence checks: split R-hat across chains and the effective sample size (Geyer's initial
// positive sequence). Nothing here knows the PDE: the log-likelihood is the caller's.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <functional>
#include <random>
#include <utility>
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

// N(m, C) on theta with C = D + U U^T: D the identity changed along a few orthonormal sparse
// directions (variance `var` along each), U a few columns (an ensemble's spread). Drawing and the
// density cost O(dim x columns) through Woodbury's identity, not O(dim^2).
struct gaussian {
    struct direction {
        std::vector<std::pair<std::size_t, double>> v;  // unit vector, entries disjoint from the others'
        double var;
        double sd_less_1 = 0, inv_less_1 = 0;           // var^(1/2) - 1 and 1 / var - 1, by prepare()
    };
    vec m;
    std::vector<direction> dirs;
    std::vector<vec> u;

    // x <- D^(1/2) x (for a draw) or D^-1 x (for the density)
    void d_pow(vec &x, bool inverse) const {
        for (const direction &d : dirs) {
            double dot = 0;
            for (const auto &[i, w] : d.v) dot += w * x[i];
            const double f = (inverse ? d.inv_less_1 : d.sd_less_1) * dot;
            for (const auto &[i, w] : d.v) x[i] += f * w;
        }
    }
    // D's factors and the Cholesky factor of Woodbury's core I + U^T D^-1 U, made once
    void prepare() {
        for (direction &d : dirs) d.sd_less_1 = std::sqrt(d.var) - 1.0, d.inv_less_1 = 1.0 / d.var - 1.0;
        const std::size_t k = u.size();
        ut.assign(m.size() * k, 0.0);
        for (std::size_t i = 0; i < k; ++i)
            for (std::size_t t = 0; t < m.size(); ++t) ut[t * k + i] = u[i][t];
        std::vector<vec> du;
        for (const vec &c : u) {
            du.push_back(c);
            d_pow(du.back(), true);
        }
        core.assign(k * k, 0.0);
        for (std::size_t i = 0; i < k; ++i)
            for (std::size_t j = 0; j <= i; ++j) {
                double s = i == j;
                for (std::size_t t = 0; t < m.size(); ++t) s += u[i][t] * du[j][t];
                for (std::size_t q = 0; q < j; ++q) s -= core[i * k + q] * core[j * k + q];
                core[i * k + j] = i == j ? std::sqrt(s) : s / core[j * k + j];
            }
    }
    // a draw of N(0, C)
    vec draw(std::mt19937_64 &rng) const {
        std::normal_distribution<double> normal;
        vec x(m.size());
        for (double &e : x) e = normal(rng);
        d_pow(x, false);
        for (const vec &c : u) {
            const double w = normal(rng);
            for (std::size_t t = 0; t < x.size(); ++t) x[t] += w * c[t];
        }
        return x;
    }
    // x^T C^-1 x = x^T D^-1 x - z^T (I + U^T D^-1 U)^-1 z, z = U^T D^-1 x
    double quad(const vec &x) const {
        vec y = x;
        d_pow(y, true);
        double q = 0;
        for (std::size_t t = 0; t < x.size(); ++t) q += x[t] * y[t];
        const std::size_t k = u.size();
        vec z(k, 0.0);
        // U^T y over U's rows, so the inner loop runs along the columns and vectorises
        for (std::size_t t = 0; t < x.size(); ++t) {
            const double *row = &ut[t * k];
            for (std::size_t i = 0; i < k; ++i) z[i] += row[i] * y[t];
        }
        for (std::size_t i = 0; i < k; ++i) {
            for (std::size_t j = 0; j < i; ++j) z[i] -= core[i * k + j] * z[j];
            z[i] /= core[i * k + i];  // forward substitution: z <- L^-1 z
        }
        for (double e : z) q -= e * e;
        return q;
    }

  private:
    vec core, ut;  // Woodbury's factor; U row-major by coefficient
};

// psi = phi for plain pCN; about N(m, C), phi + |theta|^2 / 2 - (theta - m)^T C^-1 (theta - m) / 2:
// the prior's and the reference's densities that no longer cancel.
inline double psi_of(const vec &t, double f, const gaussian *about) {
    if (!about) return f;
    double sq = 0;
    vec r(t.size());
    for (std::size_t i = 0; i < t.size(); ++i) sq += t[i] * t[i], r[i] = t[i] - about->m[i];
    return f + 0.5 * sq - 0.5 * about->quad(r);
}

// A pCN proposal of step beta from theta into `trial`: about N(0, I), or about `about`.
inline void propose(const vec &theta, double beta, const gaussian *about, std::mt19937_64 &rng,
                    std::normal_distribution<double> &normal, vec &trial) {
    const double keep_part = std::sqrt(1.0 - beta * beta);
    if (about) {
        const vec w = about->draw(rng);
        for (std::size_t i = 0; i < theta.size(); ++i)
            trial[i] = about->m[i] + keep_part * (theta[i] - about->m[i]) + beta * w[i];
    } else {
        for (std::size_t i = 0; i < theta.size(); ++i) trial[i] = keep_part * theta[i] + beta * normal(rng);
    }
}

struct chain {
    std::vector<vec> kept;      // what `keep` made of each kept state
    vec trace;                  // the negative log-likelihood of each kept state
    vec path;                   // ... of every thin-th state from the start, burn-in included
    double acceptance = 0;      // after burn-in
    double beta = 0;            // the tuned step
    double seconds = 0;
};

// One chain from theta0. `phi(theta)` is the negative log-likelihood (may return +inf to reject);
// `keep(theta)` maps a kept state to what the caller wants stored (the field, not the coefficients).
// With `about`, proposals move about N(m, C) instead of N(0, I):
// theta' = m + sqrt(1 - beta^2) (theta - m) + beta N(0, C), accepted on
// psi = phi + |theta|^2 / 2 - (theta - m)^T C^-1 (theta - m) / 2, the prior's and the reference's
// densities that no longer cancel. Without it psi = phi: plain pCN.
inline chain run(vec theta, const std::function<double(const vec &)> &phi,
                 const std::function<vec(const vec &)> &keep, const settings &s, std::uint64_t seed,
                 const gaussian *about = nullptr) {
    const auto t0 = std::chrono::steady_clock::now();
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal;
    std::uniform_real_distribution<double> uniform;
    auto psi = [&](const vec &t, double f) { return psi_of(t, f, about); };
    chain c;
    double beta = s.beta, f = phi(theta), g = psi(theta, f);
    std::size_t accepted = 0, window_accepted = 0, window = 0;
    vec trial(theta.size());
    for (std::size_t k = 0; k < s.steps; ++k) {
        propose(theta, beta, about, rng, normal, trial);
        const double ft = phi(trial);
        const double gt = std::isfinite(ft) ? psi(trial, ft) : ft;
        const bool accept = std::isfinite(gt) && std::log(uniform(rng)) < g - gt;
        if (accept) theta.swap(trial), f = ft, g = gt;
        if (k % s.thin == 0) c.path.push_back(f);
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

// Parallel tempering (replica exchange) over pCN: replicas at temperatures 1 = T_0 < ... < T_{K-1}
// each target the reference (the prior, or N(m, C) with `about`) times exp(-psi / T_k), move by the
// same pCN proposals (accepted on (psi - psi') / T_k), and after every sweep neighbours offer to swap
// states (accepted on (psi_k - psi_{k+1}) (1 / T_k - 1 / T_{k+1})). The hot replicas wander between
// the posterior's modes, the swaps carry what they find down, and only T_0's states are kept, so the
// target is still the exact posterior. During burn-in each replica tunes its beta and the ladder's
// log-spacings move towards equal swap rates (the hottest T fixed). `make_phi` makes one
// negative log-likelihood per replica, so a caller's cache of the last solve stays the replica's own.
struct ladder {
    std::size_t replicas = 8;
    double hottest = 1000.0;  // T_{K-1}
};

struct tempered : chain {
    vec temperatures;  // after burn-in adaptation
    vec swap_rate;     // between k and k + 1, after burn-in
    vec betas;         // each replica's tuned step
    double round_trips = 0;  // states that went from T_0 to the hottest and back, after burn-in
};

inline tempered run_tempered(std::vector<vec> starts,
                             const std::function<std::function<double(const vec &)>()> &make_phi,
                             const std::function<vec(const vec &)> &keep, const settings &s, const ladder &l,
                             std::uint64_t seed, const gaussian *about = nullptr) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::size_t K = std::max<std::size_t>(l.replicas, 2);
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal;
    std::uniform_real_distribution<double> uniform;
    auto psi = [&](const vec &t, double f) { return psi_of(t, f, about); };
    std::vector<std::function<double(const vec &)>> phi;
    for (std::size_t k = 0; k < K; ++k) phi.push_back(make_phi());
    // geometric ladder to start; log-spacings adapted below
    vec gap(K - 1, std::log(std::max(l.hottest, 1.0 + 1e-9)) / double(K - 1));
    vec T(K, 1.0);
    auto set_ladder = [&] {
        for (std::size_t k = 1; k < K; ++k) T[k] = T[k - 1] * std::exp(gap[k - 1]);
    };
    set_ladder();
    std::vector<vec> theta(K);
    vec f(K), g(K), beta(K, s.beta);
    std::vector<std::size_t> window_acc(K, 0);
    std::vector<int> heading(K, 0);  // +1 last visited T_0, -1 the hottest: for round trips
    for (std::size_t k = 0; k < K; ++k) {
        theta[k] = starts.at(k % starts.size());
        f[k] = phi[k](theta[k]);
        g[k] = psi(theta[k], f[k]);
    }
    vec swap_try(K - 1, 0.0), swap_acc(K - 1, 0.0), window_swap(K - 1, 0.0);
    std::size_t window = 0, accepted = 0, adapt = 0;
    tempered c;
    vec trial(theta[0].size());
    for (std::size_t step = 0; step < s.steps; ++step) {
        for (std::size_t k = 0; k < K; ++k) {
            vec &th = theta[k];
            propose(th, beta[k], about, rng, normal, trial);
            const double ft = phi[k](trial);
            const double gt = std::isfinite(ft) ? psi(trial, ft) : ft;
            const bool accept = std::isfinite(gt) && std::log(uniform(rng)) < (g[k] - gt) / T[k];
            if (accept) th.swap(trial), f[k] = ft, g[k] = gt;
            if (step < s.burn_in) window_acc[k] += accept;
            else if (k == 0) accepted += accept;
        }
        // swaps between neighbours, alternating even and odd pairs so every pair is offered in turn
        for (std::size_t k = step % 2; k + 1 < K; k += 2) {
            const double a = (g[k] - g[k + 1]) * (1.0 / T[k] - 1.0 / T[k + 1]);
            const bool swap = std::log(uniform(rng)) < a;
            if (swap) {
                // states move between temperatures; each replica's phi keeps its cache, so it re-solves once
                std::swap(theta[k], theta[k + 1]), std::swap(f[k], f[k + 1]), std::swap(g[k], g[k + 1]);
                std::swap(heading[k], heading[k + 1]);
            }
            if (step < s.burn_in) window_swap[k] += swap;
            else swap_try[k] += 1, swap_acc[k] += swap;
        }
        if (step >= s.burn_in) {
            if (heading[K - 1] == 1) c.round_trips += 0.5, heading[K - 1] = -1;
            if (heading[0] == -1) c.round_trips += 0.5, heading[0] = 1;
            if (heading[0] == 0) heading[0] = 1;
        }
        if (step % s.thin == 0) c.path.push_back(f[0]);
        if (step < s.burn_in) {
            if (++window == 100) {
                // Robbins-Monro on each log beta, and on the log-spacings towards equal swap rates
                ++adapt;
                for (std::size_t k = 0; k < K; ++k) {
                    beta[k] = std::clamp(beta[k] * std::exp(double(window_acc[k]) / 100.0 - s.target), 1e-4, 1.0);
                    window_acc[k] = 0;
                }
                const double kappa = 2.0 / std::sqrt(double(adapt));
                vec rate(K - 1);
                double avg = 0;
                for (std::size_t k = 0; k + 1 < K; ++k) rate[k] = window_swap[k] / 50.0, avg += rate[k] / double(K - 1);
                double total = 0;
                for (std::size_t k = 0; k + 1 < K; ++k) {
                    // a pair that swaps less than the others gets closer, one that swaps more spreads
                    gap[k] *= std::exp(kappa * (rate[k] - avg));
                    total += gap[k];
                    window_swap[k] = 0;
                }
                const double want = std::log(std::max(l.hottest, 1.0 + 1e-9));
                for (double &e : gap) e *= want / total;
                set_ladder();
                window = 0;
            }
            continue;
        }
        if ((step - s.burn_in) % s.thin == 0) {
            c.kept.push_back(keep(theta[0]));
            c.trace.push_back(f[0]);
        }
    }
    c.acceptance = s.steps > s.burn_in ? double(accepted) / double(s.steps - s.burn_in) : 0.0;
    c.beta = beta[0];
    c.temperatures = T;
    c.betas = beta;
    for (std::size_t k = 0; k + 1 < K; ++k) c.swap_rate.push_back(swap_try[k] > 0 ? swap_acc[k] / swap_try[k] : 0.0);
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
