// OpenCV's constants for the native CPU kernels, written once for C++. They must equal
// kamim_fast/_opencv.py (tests/test_native_fast.py parses this header and compares), so Python,
// Triton and C++ cannot drift. Source: ../shared/REFERENCE.md sections 1-3.
#pragma once

#include <cstdint>

namespace kamim_fast::opencv {

// FAST-9/16: the 16-pixel Bresenham circle of radius 3 as (dx, dy), +dy pointing down, in OpenCV's order.
constexpr int kFastCircle[16][2] = {
    {0, 3}, {1, 3}, {2, 2}, {3, 1}, {3, 0}, {3, -1}, {2, -2}, {1, -3},
    {0, -3}, {-1, -3}, {-2, -2}, {-3, -1}, {-3, 0}, {-3, 1}, {-2, 2}, {-1, 3},
};
constexpr int kFastRadius = 3;  // only rows and columns in [3, dim - 3) are tested
constexpr int kFastArc = 9;     // contiguous circle pixels all brighter or all darker
constexpr int kFastMaxThreshold = 255;

// RGB -> gray for uint8: gray = (R*wr + G*wg + B*wb + kGrayRound) >> kGrayShift (COLOR_RGB2GRAY).
constexpr int32_t kGrayWeightsRgb[3] = {9798, 19235, 3735};
constexpr int kGrayShift = 15;
constexpr int32_t kGrayRound = 1 << (kGrayShift - 1);

// cv2.drawKeypoints' ring around an integer keypoint: 48 pixels of a 9x9 window, hollow 3x3 centre.
constexpr const char* kDrawKeypointRing[9] = {
    "...###...",
    "..#####..",
    ".#######.",
    "###...###",
    "###...###",
    "###...###",
    ".#######.",
    "..#####..",
    "...###...",
};
constexpr int kDrawKeypointRingRadius = 4;

}  // namespace kamim_fast::opencv
