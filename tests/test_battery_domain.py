"""The battery-recycling flow's business rules: grading and tiered quotes."""

import pytest

from devstack.flows.battery_recycling.grading import MeasurementError, grade_battery
from devstack.flows.battery_recycling.pricing import MetalPrices, PricingError, price_quote

PRICES = MetalPrices("2026-11-02", {"cobalt": 34800, "nickel": 16990, "lithium_carbonate": 11800})


def measurements(measured: float, resistance: float = 1.0, **extra) -> dict:
    return {"nominal_capacity_kwh": 60, "measured_capacity_kwh": measured, "internal_resistance_mohm": resistance, **extra}


@pytest.mark.parametrize("measured, grade", [(57, "A"), (51, "A"), (45, "B"), (33, "C"), (20, "D")])
def test_grade_follows_state_of_health(measured, grade):
    assert grade_battery(measurements(measured)).grade == grade


def test_high_internal_resistance_lowers_a_second_life_grade():
    assessment = grade_battery(measurements(57, resistance=3.1))
    assert assessment.grade == "B" and "internal resistance" in assessment.reasons[1]


def test_swelling_means_recycle_only():
    assert grade_battery(measurements(57, swelling=True)).grade == "D"


def test_missing_measurement_is_named():
    with pytest.raises(MeasurementError, match="measurements.measured_capacity_kwh"):
        grade_battery({"nominal_capacity_kwh": 60, "internal_resistance_mohm": 1})


def test_quote_is_recoverable_metal_value_times_the_grade_premium():
    quote = price_quote("NMC811", 60, "A", PRICES)
    metal = 60 / 1000 * (0.09 * 34800 * 0.95 + 0.75 * 16990 * 0.95 + 0.60 * 11800 * 0.80)
    assert quote.metal_value_usd == pytest.approx(metal, abs=0.01)
    assert quote.amount_usd == pytest.approx(metal * 1.35, abs=0.01)
    assert quote.tier == "premium"


def test_lfp_has_no_cobalt_or_nickel_value():
    assert price_quote("LFP", 60, "C", PRICES).amount_usd == pytest.approx(60 / 1000 * 0.55 * 11800 * 0.8, abs=0.01)


def test_unknown_chemistry_is_refused_with_the_known_ones():
    with pytest.raises(PricingError, match="unknown chemistry 'NiMH'"):
        price_quote("NiMH", 60, "A", PRICES)


def test_newest_row_of_the_price_index_is_used(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("# comment\ndate,cobalt_usd_t,nickel_usd_t,lithium_carbonate_usd_t\n"
                    "2026-10-01,1,2,3\n2026-11-01,4,5,6\n2026-09-01,7,8,9\n")
    assert MetalPrices.load(path) == MetalPrices("2026-11-01", {"cobalt": 4, "nickel": 5, "lithium_carbonate": 6})
