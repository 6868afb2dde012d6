// The rule for timing two runs of one iterative method from different starts: each run is charged
// the time of its first iterate within `within` (1 %) of the better of the two final values, so a
// start that only looks faster because the other run kept iterating past convergence gains nothing,
// and a run that never gets there is charged all of its time and marked as such.
#pragma once

#include <algorithm>
#include <stdexcept>
#include <vector>

namespace fair {

struct reach {
    int iteration;   // first iterate at or below the level (the last one when not reached)
    double seconds;  // elapsed at it
    bool reached;
};

// The common level: (1 + within) times the lower of the two final values (values are >= 0).
inline double level(const std::vector<double> &a, const std::vector<double> &b, double within = 0.01) {
    if (a.empty() || b.empty()) throw std::invalid_argument("fair::level: an empty history");
    return (1.0 + within) * std::min(a.back(), b.back());
}

// When `values` (one per iterate, `seconds` elapsed at each) first reaches `level`.
inline reach to_level(const std::vector<double> &values, const std::vector<double> &seconds, double level) {
    if (values.empty() || values.size() != seconds.size())
        throw std::invalid_argument("fair::to_level: values and seconds must be non-empty and of one length");
    for (std::size_t k = 0; k < values.size(); ++k)
        if (values[k] <= level) return {int(k), seconds[k], true};
    return {int(values.size() - 1), seconds.back(), false};
}

// The rule on two synthetic pairs of curves whose answers are known; 0 when it holds.
inline int check() {
    const std::vector<double> t7 = {0, 1, 2, 3, 4, 5, 6}, t5 = {0, 1, 2, 3, 4};
    const std::vector<double> slow = {1, .5, .2, .1, .06, .0504, .05}, quick = {.3, .1, .06, .0503, .0502};
    int bad = 0;
    // the slow run ends lower (.05): the level is .0505; the slow run reaches it (.0504) at 5 s, the quick at 3 s
    double lv = level(slow, quick);
    reach a = to_level(slow, t7, lv), b = to_level(quick, t5, lv);
    bad += !(a.reached && a.iteration == 5 && a.seconds == 5 && b.reached && b.iteration == 3 && b.seconds == 3);
    // a quick run that ends lower (.04): the slow run never gets within 1 % of it and is charged all 6 s
    const std::vector<double> lower = {.3, .1, .06, .045, .04};
    lv = level(slow, lower);
    a = to_level(slow, t7, lv), b = to_level(lower, t5, lv);
    bad += !(!a.reached && a.iteration == 6 && a.seconds == 6 && b.reached && b.iteration == 4 && b.seconds == 4);
    return bad;
}

}  // namespace fair
