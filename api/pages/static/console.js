// Refreshes the console's counters in place every 5 seconds; without script they show the values
// of the page load, and everything else works the same.
setInterval(async function () {
  const counters = document.getElementById("counters");
  if (!counters) return;
  try {
    const response = await fetch("/console/counters", { credentials: "same-origin" });
    if (response.ok) counters.outerHTML = await response.text();
  } catch (e) { /* the next tick tries again */ }
}, 5000);
