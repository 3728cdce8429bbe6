"""The risk model behind the synthetic collisions (`lib.data.synth`): what a model can learn from them.

`draw_collisions(rng, year, n, shift)` draws one year's collisions part by part: when (dates with a
seasonal and weekly pattern, times with weekday rush-hour peaks), where (police force, rural or
urban, speed limit), the road layout and conditions, the vehicles, the severity and the casualties.
`lib.data.synth` then draws the rest of each DfT table from the same generator.

* Tables are linked and consistent: `number_of_vehicles` and `number_of_casualties` equal the child
  rows, every casualty's vehicle exists, and the collision severity is the worst casualty severity.
* Severity depends on real risk factors (speed limit, rural roads, darkness, motorcycles, pedal
  cycles, pedestrians, single-vehicle collisions). The intercepts are calibrated per year to about
  1.4% fatal and, as injury-based reporting would record it, a constant 24% serious.
* How it is recorded depends on the police force's reporting regime (lib/data/README.md, "Severity"):
  a force reports injury-based from its year in `INJURY_BASED_FROM`, and until then records
  `UNDER_RECORDED` of its serious collisions as slight. As forces move, the recorded serious share
  rises from about 18.7% (2018) to 23.4% (2024), as DfT's published series ("Severity shares by
  year"), while the severity itself does not change: the rise is a reporting change only. DfT's
  adjusted severity is the exact probability that a recorded-slight collision of a severity-reporting
  force was serious (`Collisions.adjusted_serious`), so the adjusted KSI share stays level.
* A `lib.data.synth.Shift` moves a share of the collisions between two dates to rural 60 mph roads at
  night; their severity follows the same risk model (calibrated on the unshifted rows), so it rises too.

Every part draws from the one generator, in the order `draw_collisions` calls them: reordering the
parts, or adding a draw to one, changes every later column for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from lib.data.codes import VEHICLE_GROUPS, lookup

if TYPE_CHECKING:
    from lib.data.synth import Shift

# Police force codes with rough weights by collision volume (Metropolitan Police the largest).
FORCES = np.array([1, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 20, 21, 22, 23, 30, 31, 32, 33, 34, 35,
                   36, 37, 40, 41, 42, 43, 44, 45, 46, 47, 48, 50, 52, 53, 54, 55, 60, 61, 62, 63, 99])
FORCE_WEIGHTS = np.array([20, 1, 3, 2, 4, 2, 2, 1, 1, 4, 2, 1, 1, 4, 2, 2, 1, 2, 2, 1, 2, 1, 2, 2, 1, 1, 2,
                          3, 4, 3, 3, 4, 3, 0.3, 3, 3, 1, 1, 1, 1, 1, 2, 1, 5], dtype=float)  # fmt: skip

# vehicle_type code -> casualty_type code of its occupants.
OCCUPANT_TYPE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 8: 8, 9: 9, 10: 10, 11: 11, 17: 17, 19: 19, 20: 20, 21: 21,
                 22: 22, 23: 23, 90: 90}  # fmt: skip


FATAL_SHARE = 0.014
SERIOUS_SHARE = 0.24  # as injury-based reporting records it
# A severity-reporting force records this share of its serious collisions as slight. With the schedule below,
# the recorded serious share follows DfT's series: 0.24 x (1 - 0.4 x the share not yet injury-based).
UNDER_RECORDED = 0.4
# Synthetic, not DfT's record of which force moved when: the year from which each force reports injury-based
# (from 1 January), chosen so that the injury-based share of collisions rises from 4% (2013) through 48% (2018)
# to 93% (2024). Forces not listed never move.
INJURY_BASED_FROM = {
    43: 2013, 20: 2014, 46: 2014, 6: 2015, 13: 2015, 42: 2015, 44: 2016, 45: 2016, 47: 2016, 1: 2017,
    50: 2019, 52: 2019, 4: 2020, 99: 2020, 5: 2021, 7: 2021, 10: 2021, 14: 2021, 21: 2022, 22: 2022, 30: 2022,
    31: 2022, 33: 2022, 3: 2023, 35: 2023, 36: 2023, 41: 2023, 62: 2023, 11: 2024, 12: 2024, 16: 2024, 17: 2024,
    23: 2024, 32: 2024, 34: 2024, 37: 2024,
}  # fmt: skip


def injury_based(police_force: np.ndarray, year: int) -> np.ndarray:
    """Whether each collision's force reported injury-based in `year` (`INJURY_BASED_FROM`)."""
    moved = [force for force, first in INJURY_BASED_FROM.items() if first <= year]
    return np.isin(police_force, moved)


@dataclass(frozen=True)
class When:
    dates: np.ndarray  # datetime64[D], one per collision
    weekday: np.ndarray  # Monday 0 .. Sunday 6
    hour: np.ndarray
    minute: np.ndarray

    @property
    def weekend(self) -> np.ndarray:
        return self.weekday >= 5


@dataclass(frozen=True)
class Where:
    police_force: np.ndarray
    rural: np.ndarray
    speed_limit: np.ndarray


@dataclass(frozen=True)
class Road:
    """The road layout, in historic codes where the two specifications differ, and the 2024 codes alongside."""

    first_road_class: np.ndarray
    first_road_number: np.ndarray
    road_type: np.ndarray
    junction_detail: np.ndarray  # historic codes
    junction_control: np.ndarray
    second_road_class: np.ndarray
    second_road_number: np.ndarray
    pedestrian_crossing: np.ndarray  # 2024 code
    human: np.ndarray  # pedestrian_crossing_human_control_historic
    physical: np.ndarray  # pedestrian_crossing_physical_facilities_historic
    hazard_2024: np.ndarray
    special_historic: np.ndarray
    hazard_historic: np.ndarray


@dataclass(frozen=True)
class Conditions:
    weather: np.ndarray
    road_surface: np.ndarray
    light: np.ndarray


@dataclass(frozen=True)
class Scene:
    """Everything about a collision that is known before its severity."""

    when: When
    where: Where
    road: Road
    conditions: Conditions


@dataclass(frozen=True)
class Vehicles:
    count: np.ndarray  # per collision
    collision: np.ndarray  # per vehicle: its collision's row
    first: np.ndarray  # per collision: the row of its first vehicle
    reference: np.ndarray  # per vehicle: 1, 2, ... within its collision
    vehicle_type: np.ndarray
    motorcycle: np.ndarray  # per collision: whether a motorcycle was involved
    pedal_cycle: np.ndarray
    goods: np.ndarray
    pedestrian: np.ndarray  # per collision: whether a pedestrian was hit

    @property
    def single(self) -> np.ndarray:
        return self.count == 1


@dataclass(frozen=True)
class Casualties:
    count: np.ndarray  # per collision
    collision: np.ndarray  # per casualty: its collision's row
    k: np.ndarray  # per casualty: 0-based within its collision
    is_pedestrian: np.ndarray
    vehicle: np.ndarray  # vehicle_reference
    casualty_class: np.ndarray
    casualty_type: np.ndarray
    severity: np.ndarray


@dataclass(frozen=True)
class Collisions:
    """One year's collisions as the risk model drew them (shifted where a `Shift` applies)."""

    scene: Scene
    vehicles: Vehicles
    severity: np.ndarray  # as recorded, the worst casualty's: 1 fatal, 2 serious, 3 slight
    casualties: Casualties
    injury_based: np.ndarray  # whether the force reported injury-based
    adjusted_serious: np.ndarray  # P(serious under injury-based reporting): DfT's collision_adjusted_severity_serious


def draw_collisions(rng: np.random.Generator, year: int, n: int, shift: Shift | None) -> Collisions:
    """`n` collisions of `year`: circumstances, vehicles, severity and casualties (module docstring)."""
    drawn_when, drawn_where = _draw_when(rng, year, n), _draw_where(rng, n)
    shifted, when, where = _apply_shift(rng, shift, drawn_when, drawn_where)
    road = _draw_road(rng, where)
    scene = Scene(when, where, road, _draw_conditions(rng, when, where, shifted))
    vehicles = _draw_vehicles(rng, where)
    reported_by_injury = injury_based(where.police_force, year)
    severity, adjusted_serious = _draw_severity(
        rng, scene, vehicles, reported_by_injury, unshifted=(drawn_when, drawn_where)
    )
    casualties = _draw_casualties(rng, severity, vehicles)
    return Collisions(scene, vehicles, severity, casualties, reported_by_injury, adjusted_serious)


def _draw_when(rng: np.random.Generator, year: int, n: int) -> When:
    """Days with a seasonal and weekly pattern; times with weekday rush-hour peaks."""
    days = np.arange(np.datetime64(f"{year}-01-01"), np.datetime64(f"{year + 1}-01-01"))
    month = days.astype("datetime64[M]").astype(int) % 12 + 1
    weekday = (days.astype(int) + 3) % 7  # Monday 0 .. Sunday 6
    month_weight = np.array([0.95, 0.9, 0.95, 0.95, 1.0, 1.0, 1.05, 1.0, 1.05, 1.1, 1.1, 1.0])
    weekday_weight = np.array([1.0, 1.05, 1.05, 1.07, 1.15, 0.95, 0.8])
    day_weight = month_weight[month - 1] * weekday_weight[weekday]
    collision_day = rng.choice(len(days), size=n, p=day_weight / day_weight.sum())
    dates = days[collision_day]
    weekend = weekday[collision_day] >= 5
    weekday_hours = np.array([0.6, 0.4, 0.3, 0.3, 0.4, 0.9, 2.2, 4.6, 6.5, 4.6, 4.2, 4.6, 5.2, 5.3, 5.6,
                              7.2, 8.1, 8.4, 6.5, 4.6, 3.4, 2.6, 2.0, 1.3])  # fmt: skip
    weekend_hours = np.array([1.5, 1.3, 1.1, 0.9, 0.7, 0.8, 1.2, 1.9, 3.0, 4.2, 5.4, 6.3, 6.7, 6.8, 6.7,
                              6.6, 6.4, 6.0, 5.4, 4.4, 3.6, 3.0, 2.6, 2.0])  # fmt: skip
    hour = np.where(
        weekend,
        choice(rng, np.arange(24), weekend_hours, n),
        choice(rng, np.arange(24), weekday_hours, n),
    )
    minute = choice(rng, np.arange(60), np.where(np.arange(60) % 5 == 0, 5.0, 1.0), n)
    return When(dates, weekday[collision_day], hour, minute)


def _draw_where(rng: np.random.Generator, n: int) -> Where:
    police_force = choice(rng, FORCES, FORCE_WEIGHTS, n)
    rural = rng.random(n) < 0.33
    speed_limit = np.where(
        rural,
        choice(rng, [30, 40, 50, 60, 70], [0.16, 0.1, 0.08, 0.5, 0.16], n),
        choice(rng, [20, 30, 40, 50, 60, 70], [0.24, 0.6, 0.09, 0.03, 0.02, 0.02], n),
    )
    return Where(police_force, rural, speed_limit)


def _apply_shift(
    rng: np.random.Generator, shift: Shift | None, when: When, where: Where
) -> tuple[np.ndarray, When, Where]:
    """The shifted rows, and `when` and `where` with those rows on rural 60 mph roads at night.

    `when` and `where` themselves stay as drawn: severity intercepts are calibrated on them, so the
    shift raises severity as it would.
    """
    n = len(where.rural)
    shifted = np.zeros(n, dtype=bool)
    if shift is not None:
        in_window = (when.dates >= np.datetime64(shift.start)) & (when.dates <= np.datetime64(shift.end))
        shifted = in_window & (rng.random(n) < shift.fraction)
    rural, speed_limit, hour = where.rural.copy(), where.speed_limit.copy(), when.hour.copy()
    rural[shifted] = True
    speed_limit[shifted] = 60
    hour[shifted] = choice(rng, [21, 22, 23, 0, 1, 2, 3, 4], [1, 1, 1, 1, 1, 1, 1, 1], int(shifted.sum()))
    return shifted, replace(when, hour=hour), replace(where, rural=rural, speed_limit=speed_limit)


def _draw_road(rng: np.random.Generator, where: Where) -> Road:
    rural, speed_limit, n = where.rural, where.speed_limit, len(where.rural)
    first_road_class = np.where(
        speed_limit == 70,
        choice(rng, [1, 2, 3], [0.6, 0.05, 0.35], n),
        np.where(rural, choice(rng, [3, 4, 5, 6], [0.5, 0.2, 0.15, 0.15], n),
                 choice(rng, [3, 4, 5, 6], [0.42, 0.12, 0.08, 0.38], n)),
    )  # fmt: skip
    road_type = np.where(
        first_road_class <= 2,
        choice(rng, [3, 7], [0.9, 0.1], n),
        choice(rng, [1, 2, 3, 6, 7, 9], [0.07, 0.02, 0.12, 0.76, 0.01, 0.02], n),
    )
    junction_detail = np.where(
        road_type == 1,
        choice(rng, [1, 2], [0.85, 0.15], n),
        choice(rng, [0, 3, 5, 6, 7, 8, 9], [0.45, 0.33, 0.02, 0.1, 0.01, 0.04, 0.05], n),
    )
    at_junction = junction_detail != 0
    junction_control = np.where(
        at_junction, choice(rng, [1, 2, 3, 4, 9], [0.003, 0.2, 0.01, 0.77, 0.017], n), 0
    )
    second_road_class = np.where(at_junction, choice(rng, [3, 4, 5, 6, 9], [0.15, 0.07, 0.05, 0.7, 0.03], n), 0)
    first_road_number = np.where(first_road_class <= 4, rng.integers(1, 10000, n), 0)
    first_road_number = np.where(first_road_class <= 2, rng.integers(1, 100, n), first_road_number)
    second_road_number = np.where(
        at_junction & (second_road_class <= 4), rng.integers(1, 10000, n), np.where(at_junction, 0, -1)
    )
    pedestrian_crossing = np.where(
        rural, 0, choice(rng, [0, 11, 12, 13, 14, 15, 16, 17], [0.8, 0.004, 0.003, 0.02, 0.05, 0.08, 0.003, 0.04], n)
    )
    human = lookup(pedestrian_crossing, {11: 1, 12: 2}, default=0)
    physical = lookup(pedestrian_crossing, {13: 1, 14: 4, 15: 5, 16: 7, 17: 8}, default=0)

    # Hazards and special conditions: at most one of the two, so the 2024 single column can hold it.
    hazard_2024 = choice(rng, [0, 11, 12, 13, 14, 15, 21, 16, 17, 18, 19, 20],
                          [955, 3, 2, 12, 4, 2, 4, 3, 6, 3, 2, 4], n)  # fmt: skip
    special_historic = lookup(hazard_2024, {11: 1, 12: 3, 13: 4, 14: 6, 15: 7, 21: 5}, default=0)
    hazard_historic = lookup(hazard_2024, {16: 1, 17: 2, 18: 3, 19: 6, 20: 7}, default=0)
    return Road(first_road_class, first_road_number, road_type, junction_detail, junction_control,
                 second_road_class, second_road_number, pedestrian_crossing, human, physical, hazard_2024,
                 special_historic, hazard_historic)  # fmt: skip


def _after_dark(dates: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """Whether each hour falls before sunrise or after sunset, by month (whole hours, roughly England)."""
    month_of = dates.astype("datetime64[M]").astype(int) % 12 + 1
    sunrise = np.array([8, 7, 6, 6, 5, 4, 4, 5, 6, 7, 7, 8])[month_of - 1]
    sunset = np.array([16, 17, 18, 20, 20, 21, 21, 20, 19, 18, 16, 16])[month_of - 1]
    return (hour < sunrise) | (hour >= sunset)


def _draw_conditions(rng: np.random.Generator, when: When, where: Where, shifted: np.ndarray) -> Conditions:
    """Weather, the road surface it leaves, and the light (shifted rows are dark)."""
    n = len(shifted)
    weather = choice(rng, [1, 2, 3, 4, 5, 6, 7, 8, 9], [0.8, 0.12, 0.005, 0.012, 0.012, 0.001, 0.006, 0.02, 0.024], n)
    road_surface = np.select(
        [np.isin(weather, [2, 5]), np.isin(weather, [3, 6]), weather == 9],
        [np.full(n, 2), choice(rng, [3, 4], [0.6, 0.4], n), choice(rng, [1, 2, 9], [0.5, 0.3, 0.2], n)],
        choice(rng, [1, 2, 4, 5], [0.76, 0.21, 0.025, 0.005], n),
    )
    light = np.where(
        _after_dark(when.dates, when.hour),
        np.where(where.rural, choice(rng, [4, 5, 6, 7], [0.2, 0.02, 0.7, 0.08], n),
                 choice(rng, [4, 5, 6, 7], [0.86, 0.03, 0.05, 0.06], n)),
        1,
    )  # fmt: skip
    light[shifted] = np.where(rng.random(int(shifted.sum())) < 0.85, 6, 4)
    return Conditions(weather, road_surface, light)


def _draw_vehicles(rng: np.random.Generator, where: Where) -> Vehicles:
    """How many vehicles of which types each collision involves, and whether it hit a pedestrian."""
    n = len(where.rural)
    n_vehicles = choice(rng, [1, 2, 3, 4, 5, 6], [0.3, 0.58, 0.09, 0.02, 0.007, 0.003], n)
    collision_of_vehicle = np.repeat(np.arange(n), n_vehicles)
    first_vehicle = np.cumsum(n_vehicles) - n_vehicles
    vehicle_reference = np.arange(len(collision_of_vehicle)) - first_vehicle[collision_of_vehicle] + 1
    m = len(collision_of_vehicle)
    vehicle_type = choice(rng, [9, 1, 2, 3, 4, 5, 8, 19, 20, 21, 11, 10, 17, 90, 22, 23],
                           [0.68, 0.08, 0.01, 0.03, 0.01, 0.03, 0.025, 0.065, 0.008, 0.017, 0.017, 0.003, 0.002,
                            0.006, 0.002, 0.002], m)  # fmt: skip

    def involved(group: str) -> np.ndarray:
        return np.bincount(collision_of_vehicle, np.isin(vehicle_type, list(VEHICLE_GROUPS[group])), n) > 0

    pedestrian = rng.random(n) < np.where(n_vehicles == 1, np.where(where.rural, 0.25, 0.6), 0.02)
    return Vehicles(n_vehicles, collision_of_vehicle, first_vehicle, vehicle_reference, vehicle_type,
                     involved("motorcycle"), involved("pedal_cycle"), involved("goods"), pedestrian)  # fmt: skip


def _draw_severity(
    rng: np.random.Generator, scene: Scene, vehicles: Vehicles, reported_by_injury: np.ndarray,
    unshifted: tuple[When, Where],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The worst casualty's severity as recorded, from a logistic risk model calibrated per year on the
    unshifted rows, and the probability that it is serious under injury-based reporting (module docstring)."""
    n = len(vehicles.count)
    weekend, road_surface = scene.when.weekend, scene.conditions.road_surface
    motorcycle, pedal_cycle, goods = vehicles.motorcycle, vehicles.pedal_cycle, vehicles.goods
    pedestrian = vehicles.pedestrian

    def ksi_score(rural_, speed_, dark_, hour_):
        return (1.2 * (speed_ >= 60) + 0.45 * np.isin(speed_, [40, 50]) + 0.4 * rural_ + 0.4 * dark_
                + 1.4 * motorcycle + 1.2 * pedestrian + 0.6 * pedal_cycle + 0.3 * vehicles.single
                + 0.3 * (weekend & ((hour_ >= 22) | (hour_ <= 4))) - 0.1 * (road_surface == 2))  # fmt: skip

    def fatal_score(rural_, speed_, dark_):
        return 1.0 * (speed_ >= 60) + 0.5 * dark_ + 0.6 * pedestrian + 0.5 * motorcycle + 0.4 * rural_ + 0.5 * goods

    base_when, base_where = unshifted
    base_rural, base_speed, base_hour = base_where.rural, base_where.speed_limit, base_when.hour
    base_dark = _after_dark(base_when.dates, base_hour)
    ksi_target = FATAL_SHARE + SERIOUS_SHARE
    ksi_intercept = _calibrate(ksi_score(base_rural, base_speed, base_dark, base_hour), ksi_target)
    p_ksi_base = _sigmoid(ksi_score(base_rural, base_speed, base_dark, base_hour) + ksi_intercept)
    # P(fatal) = P(KSI) * P(fatal | KSI) averages FATAL_SHARE
    fatal_intercept = _calibrate(fatal_score(base_rural, base_speed, base_dark), FATAL_SHARE, weight=p_ksi_base)
    rural, speed_limit, hour = scene.where.rural, scene.where.speed_limit, scene.when.hour
    dark = scene.conditions.light != 1
    p_ksi = _sigmoid(ksi_score(rural, speed_limit, dark, hour) + ksi_intercept)
    p_fatal = _sigmoid(fatal_score(rural, speed_limit, dark) + fatal_intercept)
    ksi_draw = rng.random(n)
    ksi = ksi_draw < p_ksi
    fatal = ksi & (rng.random(n) < p_fatal)
    # Given KSI, ksi_draw is uniform below p_ksi: its top UNDER_RECORDED of that range is a serious
    # collision that a severity-reporting force records as slight.
    under_recorded = ksi & ~fatal & ~reported_by_injury & (ksi_draw >= p_ksi * (1 - UNDER_RECORDED))
    severity = np.where(fatal, 1, np.where(ksi & ~under_recorded, 2, 3))
    # Bayes: P(serious, recorded slight) / P(recorded slight), for the rows a severity-reporting force records slight.
    hidden_serious = p_ksi * (1 - p_fatal) * UNDER_RECORDED
    adjusted = np.where(reported_by_injury, 0.0, hidden_serious / (1 - p_ksi + hidden_serious))
    adjusted_serious = np.where(severity == 2, 1.0, np.where(severity == 1, 0.0, np.round(adjusted, 4)))
    return severity, adjusted_serious


def _draw_casualties(rng: np.random.Generator, severity: np.ndarray, vehicles: Vehicles) -> Casualties:
    """A pedestrian collision has the pedestrian plus 0-4 injured occupants; any other has 1-5 occupants.
    The first casualty has the collision's severity, the others that or slight."""
    n = len(severity)
    pedestrian, n_vehicles = vehicles.pedestrian, vehicles.count
    n_casualties = choice(rng, [1, 2, 3, 4, 5], [0.72, 0.18, 0.06, 0.03, 0.01], n)
    collision_of_casualty = np.repeat(np.arange(n), n_casualties)
    first_casualty = np.cumsum(n_casualties) - n_casualties
    k = np.arange(len(collision_of_casualty)) - first_casualty[collision_of_casualty]  # 0-based within collision
    c = len(collision_of_casualty)
    is_pedestrian = pedestrian[collision_of_casualty] & (k == 0)
    occupant_k = k - pedestrian[collision_of_casualty]  # 0-based among occupants
    casualty_vehicle = np.where(is_pedestrian, 1, occupant_k % n_vehicles[collision_of_casualty] + 1)
    vehicle_row = vehicles.first[collision_of_casualty] + casualty_vehicle - 1
    casualty_class = np.where(is_pedestrian, 3, np.where(occupant_k < n_vehicles[collision_of_casualty], 1, 2))
    casualty_type = np.where(is_pedestrian, 0, lookup(vehicles.vehicle_type[vehicle_row], OCCUPANT_TYPE, default=90))
    worst = severity[collision_of_casualty]
    casualty_severity = np.where(k == 0, worst, np.where(rng.random(c) < 0.3, worst, 3))
    return Casualties(n_casualties, collision_of_casualty, k, is_pedestrian, casualty_vehicle, casualty_class,
                       casualty_type, casualty_severity)  # fmt: skip


def choice(rng: np.random.Generator, codes, weights, size: int) -> np.ndarray:
    weights = np.asarray(weights, dtype=float)
    return np.asarray(codes)[rng.choice(len(weights), size=size, p=weights / weights.sum())]


def _calibrate(linear: np.ndarray, target: float, weight: np.ndarray | float = 1.0) -> float:
    """Intercept b with mean(weight * sigmoid(linear + b)) == target (bisection: the mean rises with b)."""
    low, high = -20.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        if np.mean(weight * _sigmoid(linear + middle)) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))
