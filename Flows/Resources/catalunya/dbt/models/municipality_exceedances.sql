-- Days on which a municipality's daily mean passed the EU limit (NO2 40, PM10 50, O3 120 µg/m3).
select municipality,
       pollutant,
       day,
       round(avg(mean_value)::numeric, 2) as mean_value,
       case pollutant when 'NO2' then 40 when 'PM10' then 50 else 120 end as limit_value,
       avg(mean_value) > case pollutant when 'NO2' then 40 when 'PM10' then 50 else 120 end as exceeded
from {{ ref('daily_station_averages') }}
group by municipality, pollutant, day
